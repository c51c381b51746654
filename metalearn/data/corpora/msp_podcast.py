"""MSP-Podcast (Lotfian and Busso 2019): podcast segments with crowd-sourced consensus labels.

Layout on disk::

    Audios/{FileName}                 # e.g. MSP-PODCAST_0001_0008.wav (``Audio/`` is accepted too)
    Labels/labels_consensus.csv       # FileName, EmoClass, EmoAct, EmoVal, EmoDom, SpkrID, Gender, Split_Set
    Transcripts/{utterance_id}.txt    # optional

One CSV row per file: ``utterance_id`` is FileName without its extension, the raw label is the EmoClass
letter (A S H U F D C N O X; X = no agreement, excluded and counted), the speaker is SpkrID as written,
gender is Female/Male (anything else: unknown), and the split is Split_Set lowercased (train, development,
test1, test2, ...).

Unknown speakers: a SpkrID of ``Unknown`` (any case) or empty is not one person. Such rows STAY in the
manifest (they are fine for pre-finetuning, which never groups by speaker) with the speaker written exactly
:data:`UNKNOWN_SPEAKER` (``Unknown``), the value the experiment config's ``speakers.exclude`` default drops
before anything per speaker (tasks, folds). Their count is logged and returned in ``LoadResult.notes``.

A missing CSV, a missing audio folder or a missing column is an error; a wav without a row is reported, and
a row whose wav is missing is counted as "label without audio".
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator
from pathlib import Path

from metalearn.data.corpora.base import ClipInfo, LoadContext, audio_files
from metalearn.util.errors import MetalearnError
from metalearn.data.manifest import Utterance

LABELS_CSV = Path("Labels") / "labels_consensus.csv"
AUDIO_DIRS = ("Audios", "Audio")
COLUMNS = ("FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set")
REQUIRED = ("FileName", "EmoClass", "SpkrID", "Gender", "Split_Set")
GENDERS = {"female": "female", "male": "male"}
UNKNOWN_SPEAKER = "Unknown"   # the manifest's speaker for rows without a known SpkrID
UNKNOWN_NOTE = f"speaker {UNKNOWN_SPEAKER} (kept; not a per-speaker task)"
log = logging.getLogger(__name__)


def read_labels(path: Path, ctx: LoadContext) -> dict[str, dict[str, str]]:
    """``{utterance_id: row}`` from ``labels_consensus.csv``; a repeated FileName is reported, first kept."""
    if not path.is_file():
        raise MetalearnError(f"MSP-Podcast labels not found: expected {path}")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise MetalearnError(f"{path}: missing column {', '.join(missing)}; "
                                 f"expected columns: {', '.join(COLUMNS)}")
        reader.fieldnames = header
        rows: dict[str, dict[str, str]] = {}
        for rec in reader:
            name = (rec["FileName"] or "").strip()
            if not name:
                continue
            utterance_id = Path(name).stem
            if utterance_id in rows:
                ctx.report.add(path, f"duplicate row for {name} (the first one is used)")
                continue
            rows[utterance_id] = {k: (v or "").strip() for k, v in rec.items() if isinstance(k, str)}
    return rows


def audio_dir(root: Path) -> Path:
    """The folder holding the wavs (``Audios/``, or ``Audio/`` in some copies)."""
    for name in AUDIO_DIRS:
        if (root / name).is_dir():
            return root / name
    raise MetalearnError(f"MSP-Podcast audio not found: expected a folder {root / AUDIO_DIRS[0]}")


def transcript(root: Path, utterance_id: str) -> str:
    """The text of ``Transcripts/{utterance_id}.txt``, or "" when there is none."""
    path = root / "Transcripts" / f"{utterance_id}.txt"
    return path.read_text(encoding="utf-8", errors="replace").strip() if path.is_file() else ""


def speaker_of(spkr_id: str) -> str:
    """The manifest speaker of a SpkrID: as written, or :data:`UNKNOWN_SPEAKER` for ``unknown`` (any case) or ""."""
    spkr_id = spkr_id.strip()
    return UNKNOWN_SPEAKER if spkr_id.lower() in ("", UNKNOWN_SPEAKER.lower()) else spkr_id


def load(root: Path, ctx: LoadContext) -> Iterator[Utterance | None]:
    """All labelled MSP-Podcast utterances under ``root`` (see the module docstring for the layout)."""
    rows = read_labels(root / LABELS_CSV, ctx)
    found: set[str] = set()
    for path in audio_files(audio_dir(root)):
        utterance_id = path.stem
        if utterance_id in found:
            ctx.report.add(path, f"duplicate utterance {utterance_id} (another copy was already loaded)")
            continue
        found.add(utterance_id)
        row = rows.get(utterance_id)
        if row is None:
            ctx.report.add(path, f"no row in {LABELS_CSV.name}")
            continue
        clip = ClipInfo(utterance_id=utterance_id, speaker=speaker_of(row["SpkrID"]),
                        gender=GENDERS.get(row["Gender"].lower(), "unknown"), split=row["Split_Set"].lower(),
                        text=transcript(root, utterance_id))
        u = ctx.utterance(path, clip, raw_label=row["EmoClass"])
        if u is not None and u.speaker == UNKNOWN_SPEAKER:
            ctx.notes[UNKNOWN_NOTE] += 1
        yield u
    missing = len(rows.keys() - found)
    if missing:
        ctx.excluded["label without audio"] += missing
    if ctx.notes[UNKNOWN_NOTE]:
        log.info("msp_podcast: %d utterance(s) with SpkrID %s kept as speaker %r (pre-finetuning only; "
                 "speakers.exclude drops them from per-speaker tasks)",
                 ctx.notes[UNKNOWN_NOTE], UNKNOWN_SPEAKER, UNKNOWN_SPEAKER)
