"""IEMOCAP (Busso et al. 2008): 5 sessions, each with one female and one male actor (10 speakers).

Layout on disk (``Session{n}`` folders directly under the root or one wrapper folder down)::

    Session{n}/sentences/wav/{dialog}/{utt}.wav
    Session{n}/dialog/EmoEvaluation/{dialog}.txt       # "[start - end]\\tUTT_ID\\tLABEL\\t[V, A, D]"
    Session{n}/dialog/transcriptions/{dialog}.txt      # "UTT_ID [start-end]: text"   (optional)

Only the summary lines of an EmoEvaluation file are read (header, ``C-E1:`` annotator and blank lines are
ignored, and so are the files in its subfolders). The raw label is the 3-letter code (neu hap exc ang sad
fru fea sur dis oth xxx); ``xxx`` (no agreement) is excluded and counted by the load context.

Speaker: an utterance id such as ``Ses01F_impro01_M003`` names the actor who speaks in the gender letter of
its LAST segment (``M``): session 1's male actor, speaker id ``Ses01M``. The letter after ``Ses01`` names the
actor wearing the motion-capture markers, not the speaker. There is no official split (split is "").
A wav without a label line is reported; a label line without a wav is counted as "label without audio".

Option ``type`` (which dialogs): ``all`` (default, what GEmo-CLAP and most IEMOCAP work use), ``improvised``
(``_impro`` dialogs: the actors' own words, no script) or ``scripted`` (``_script`` dialogs: three
scripts, each played in every session, so their lines recur across sessions, speakers and emotions). The
dialogs left out are counted as excluded ("scripted dialog (type=improvised)").
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from metalearn.data.corpora.base import ClipInfo, LoadContext, audio_files
from metalearn.data.manifest import Utterance
from metalearn.util.errors import MetalearnError

_SESSION_DIR = re.compile(r"^Session(\d+)$")
_UTTERANCE_ID = re.compile(r"^Ses(\d{2})[FM]_\w+_([FM])\d+$")
_LABEL_LINE = re.compile(r"^\[\s*[\d.]+\s*-\s*[\d.]+\s*\]\s+(Ses\S+)\s+(\S+)\s+\[")
_TRANSCRIPT_LINE = re.compile(r"^(Ses\S+)\s+\[[^\]]*\]:\s*(.*)$")
_DIALOG_TYPE = re.compile(r"^Ses\d+[FM]_(impro|script)")
GENDERS = {"F": "female", "M": "male"}
TYPES = ("all", "improvised", "scripted")
OPTIONS = {"type": "all"}


def session_dirs(root: Path) -> list[Path]:
    """``Session{n}`` folders under ``root`` or one wrapper folder down, sorted."""
    found = [p for p in root.iterdir() if p.is_dir() and _SESSION_DIR.match(p.name)]
    if not found:
        found = [p for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")
                 for p in d.iterdir() if p.is_dir() and _SESSION_DIR.match(p.name)]
    return sorted(found, key=lambda p: (int(_SESSION_DIR.match(p.name).group(1)), str(p)))


def _text_files(folder: Path) -> list[Path]:
    """The ``*.txt`` files directly in ``folder`` (none if missing), skipping ``._*`` and hidden ones."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.txt") if p.is_file() and not p.name.startswith("."))


def _matches(files: list[Path], pattern: re.Pattern[str]) -> dict[str, str]:
    """``{group 1: group 2}`` over every line of ``files`` that ``pattern`` matches."""
    table: dict[str, str] = {}
    for path in files:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            m = pattern.match(line.strip())
            if m:
                table[m.group(1)] = m.group(2).strip()
    return table


def read_labels(session: Path) -> dict[str, str]:
    """``{utterance_id: 3-letter code}`` from ``dialog/EmoEvaluation/*.txt`` of one session."""
    return _matches(_text_files(session / "dialog" / "EmoEvaluation"), _LABEL_LINE)


def read_transcripts(session: Path) -> dict[str, str]:
    """``{utterance_id: text}`` from ``dialog/transcriptions/*.txt`` of one session (empty when absent)."""
    return _matches(_text_files(session / "dialog" / "transcriptions"), _TRANSCRIPT_LINE)


def speaker_of(utterance_id: str) -> tuple[str, str] | None:
    """(speaker id, gender) of an utterance id, e.g. ``Ses01F_impro01_M003`` -> ("Ses01M", "male")."""
    m = _UTTERANCE_ID.match(utterance_id)
    if not m:
        return None
    return f"Ses{m.group(1)}{m.group(2)}", GENDERS[m.group(2)]


def dialog_type(utterance_id: str) -> str | None:
    """``improvised`` or ``scripted`` from an utterance id (``Ses01F_impro01_F000``, ``Ses01M_script01_1_F005``)."""
    m = _DIALOG_TYPE.match(utterance_id)
    return None if m is None else {"impro": "improvised", "script": "scripted"}[m.group(1)]


def _kept(utterance_id: str, type: str) -> bool:
    return type == "all" or dialog_type(utterance_id) == type


def load_session(session: Path, ctx: LoadContext, seen: set[str], type: str = "all") -> Iterator[Utterance | None]:
    """Every labelled utterance of one session folder, of the dialogs ``type`` selects."""
    labels = read_labels(session)
    transcripts = read_transcripts(session)
    wav_dir = session / "sentences" / "wav"
    found: set[str] = set()
    for path in audio_files(wav_dir) if wav_dir.is_dir() else ():
        utterance_id = path.stem
        speaker = speaker_of(utterance_id)
        if speaker is None:
            ctx.report.add(path, "unexpected file name (expected Ses{NN}{F|M}_{dialog}_{F|M}{NNN}.wav)")
            continue
        found.add(utterance_id)
        if not _kept(utterance_id, type):
            ctx.excluded[f"{dialog_type(utterance_id) or 'unknown'} dialog (type={type})"] += 1
            continue
        if utterance_id in seen:
            ctx.report.add(path, f"duplicate utterance {utterance_id} (another copy was already loaded)")
            continue
        seen.add(utterance_id)
        if utterance_id not in labels:
            ctx.report.add(path, "no label in EmoEvaluation")
            continue
        yield ctx.utterance(path, ClipInfo(utterance_id=utterance_id, speaker=speaker[0], gender=speaker[1], split="",
                                           text=transcripts.get(utterance_id, "")), raw_label=labels[utterance_id])
    missing = sum(_kept(u, type) for u in labels.keys() - found)
    if missing:
        ctx.excluded["label without audio"] += missing


def load(root: Path, ctx: LoadContext, type: str = OPTIONS["type"]) -> Iterator[Utterance | None]:
    """All labelled IEMOCAP utterances under ``root`` of the dialogs ``type`` selects (see the module docstring)."""
    if type not in TYPES:
        raise MetalearnError(f"iemocap option type={type!r}: expected one of {', '.join(TYPES)}")
    seen: set[str] = set()
    for session in session_dirs(root):
        yield from load_session(session, ctx, seen, type)
