"""ESD (Emotional Speech Dataset, Zhou et al. 2021): 10 Mandarin and 10 English speakers, 5 emotions.

Layout on disk (both variants are accepted, per speaker)::

    {root}/[wrapper/]{spk}/{Emotion}/{train|evaluation|test}/{spk}_{idx:06d}.wav   # split folders
    {root}/[wrapper/]{spk}/{Emotion}/{spk}_{idx:06d}.wav                          # flat
    {root}/[wrapper/]{spk}/{spk}.txt        # optional: "{spk}_{idx:06d}\\t{transcript}\\t{emotion}"

``spk`` is a 4-digit folder name (0001-0010 Mandarin, 0011-0020 English), found at depth 1 or 2 so a
wrapper folder such as ``Emotion Speech Dataset/`` is fine. ``Emotion`` is Neutral, Angry, Happy, Sad or
Surprise and is the raw label (an unknown folder is reported by the load context).

Split: the split folder when there is one; otherwise the utterance index decides, in blocks of 350 per
emotion: position ``p = (idx - 1) % 350 + 1``; p <= 20 evaluation, p <= 50 test, else train.

Transcripts come from ``{spk}.txt`` (UTF-8 with or without BOM, else GB18030 or UTF-16); a line that does
not parse is skipped. Its emotion column (Chinese words for the Mandarin speakers) is not used: the
emotion folder wins. Gender comes from the official speaker table; other speaker ids get "unknown".
A ``.wav`` whose name is not ``{spk}_{6 digits}.wav`` is reported; other files are ignored.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

from metalearn.data.corpora.base import ClipInfo, LoadContext, audio_files
from metalearn.data.emotions import LABEL_MAPS
from metalearn.data.manifest import Utterance

log = logging.getLogger(__name__)

FEMALE = frozenset("0001 0002 0003 0007 0009 0015 0016 0017 0018 0019".split())
MALE = frozenset("0004 0005 0006 0008 0010 0011 0012 0013 0014 0020".split())
SPLIT_FOLDERS = ("train", "evaluation", "test")
BLOCK = 350  # utterances per emotion and speaker

_SPEAKER_DIR = re.compile(r"^\d{4}$")
_FILE_NAME = re.compile(r"^(\d{4})_(\d{6})\.wav$", re.IGNORECASE)
_TXT_ID = re.compile(r"^\d{4}_\d{6}$")


def gender_of(speaker: str) -> str:
    """female, male or unknown, from the official ESD speaker table."""
    return "female" if speaker in FEMALE else "male" if speaker in MALE else "unknown"


def split_of(index: int) -> str:
    """The split of utterance ``index`` (1-based) by its position inside its 350-utterance emotion block."""
    position = (index - 1) % BLOCK + 1
    return "evaluation" if position <= 20 else "test" if position <= 50 else "train"


def speaker_dirs(root: Path) -> Iterator[Path]:
    """4-digit speaker folders directly under ``root`` or one wrapper folder down, sorted."""
    for child in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if _SPEAKER_DIR.match(child.name):
            yield child
        else:
            yield from sorted(p for p in child.iterdir() if p.is_dir() and _SPEAKER_DIR.match(p.name))


def decode_text_file(path: Path) -> str:
    """The text of ``path``: UTF-16 when it has that BOM, else UTF-8 (BOM optional), else GB18030."""
    raw = path.read_bytes()
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16")
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return raw.decode("utf-8", errors="replace")


def read_transcripts(path: Path) -> dict[str, tuple[str, str]]:
    """``{utterance_id: (transcript, emotion word)}`` from a speaker's tab-separated ``{spk}.txt``."""
    table: dict[str, tuple[str, str]] = {}
    for line in decode_text_file(path).splitlines():
        fields = [f.strip() for f in line.split("\t")]
        if len(fields) < 2 or not _TXT_ID.match(fields[0]):
            continue
        table[fields[0]] = (fields[1], fields[2] if len(fields) > 2 else "")
    return table


def _split_folder(rel: tuple[str, ...]) -> str | None:
    """"" for ``Emotion/file``, the split for ``Emotion/{split}/file``, None for any other depth."""
    if len(rel) == 2:
        return ""
    if len(rel) == 3 and rel[1].lower() in SPLIT_FOLDERS:
        return rel[1].lower()
    return None


def load_speaker(spk_dir: Path, ctx: LoadContext, seen: set[str]) -> Iterator[Utterance | None]:
    """Every utterance of one speaker folder."""
    speaker = spk_dir.name
    txt = spk_dir / f"{speaker}.txt"
    transcripts = read_transcripts(txt) if txt.is_file() else {}
    for path in audio_files(spk_dir):
        rel = path.relative_to(spk_dir).parts
        folder_split = _split_folder(rel)
        if folder_split is None:
            ctx.report.add(path, "unexpected location (expected "
                                 f"{speaker}/{{Emotion}}/[train|evaluation|test/]{speaker}_NNNNNN.wav)")
            continue
        m = _FILE_NAME.match(path.name)
        if not m or m.group(1) != speaker:
            ctx.report.add(path, f"unexpected file name (expected {speaker}_NNNNNN.wav, six digits)")
            continue
        utterance_id = f"{speaker}_{m.group(2)}"
        if utterance_id in seen:
            ctx.report.add(path, f"duplicate utterance {utterance_id} (another copy was already loaded)")
            continue
        seen.add(utterance_id)
        emotion_folder = rel[0]
        text, txt_emotion = transcripts.get(utterance_id, ("", ""))
        if txt_emotion and LABEL_MAPS["esd"].get(txt_emotion) != LABEL_MAPS["esd"].get(emotion_folder):
            log.debug("%s: transcript says %r, folder %r; using the folder",
                      path, txt_emotion, emotion_folder)
        yield ctx.utterance(path, ClipInfo(utterance_id=utterance_id, speaker=speaker, gender=gender_of(speaker),
                                           split=folder_split or split_of(int(m.group(2))), text=text),
                            raw_label=emotion_folder)


def load(root: Path, ctx: LoadContext) -> Iterator[Utterance | None]:
    """All ESD utterances under ``root`` (see the module docstring for the layout)."""
    seen_speakers: dict[str, Path] = {}
    seen_ids: set[str] = set()
    for spk_dir in speaker_dirs(root):
        if spk_dir.name in seen_speakers:
            first = seen_speakers[spk_dir.name]
            ctx.report.add(spk_dir, f"duplicate speaker folder (already loaded {first})")
            continue
        seen_speakers[spk_dir.name] = spk_dir
        yield from load_speaker(spk_dir, ctx, seen_ids)
