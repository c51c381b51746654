"""MSP-IMPROV (Busso et al. 2017): 6 sessions, 12 actors (F01-F06, M01-M06), dyadic improvisations.

Layout on disk (the ``session{k}`` folders may sit at any depth, e.g. under ``Audio/``)::

    [Audio/]session{k}/{sentence code}/{scenario}/MSP-IMPROV-{sentence code}-{speaker}-{scenario}-{other}.wav
    e.g. Audio/session1/S01A/P/MSP-IMPROV-S01A-F01-P-FM01.wav

File-name fields: the sentence code ``S01A`` is target sentence 01 with emotion letter ``A`` (A angry,
H happy, S sad, N neutral); the speaker ``F01``/``M03`` starts with the gender letter (F female, M male);
the scenario letter is P, R, S or T (P natural interaction, R read, S improvised "other", T improvised
target sentence); the last field names the recording pair.

Every ``*.wav`` under the root is parsed from its file name alone, so the folder structure above it does not
matter. The emotion is the TARGET emotion of the sentence code in the file name; the perceptual (crowd)
consensus labels of ``Evaluation.txt`` (spelled ``Evalution.txt`` in some releases; lines like
``UTD-IMPROV-S01A-F01-S-FM01.avi; N; A:3.0; V:3.5; D:3.0;``) are not used, although most published work
uses them, and for natural-interaction (P) clips the target letter names the scenario, not what was
perceived. Unverified against a real copy. There is no official split
(split is "") and no transcript (text is ""). A name that does not parse is reported.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from metalearn.data.corpora.base import LoadContext, audio_files
from metalearn.data.manifest import Utterance

_FILE_NAME = re.compile(
    r"^MSP-IMPROV-S(?P<sentence>\d{2})(?P<emotion>[A-Z])-(?P<speaker>(?P<gender>[FM])\d{2})"
    r"-(?P<scenario>[A-Z])-(?P<other>[A-Z0-9]+)$", re.IGNORECASE)
EXPECTED = "MSP-IMPROV-S{NN}{A|H|S|N}-{F|M}{NN}-{P|R|S|T}-{pair}.wav, e.g. MSP-IMPROV-S01A-F01-P-FM01.wav"
GENDERS = {"F": "female", "M": "male"}


def parse_name(stem: str) -> dict[str, str] | None:
    """The fields of a file stem (sentence, emotion, speaker, gender, scenario, other), upper-cased."""
    m = _FILE_NAME.match(stem)
    return {k: v.upper() for k, v in m.groupdict().items()} if m else None


def load(root: Path, ctx: LoadContext) -> Iterator[Utterance | None]:
    """All MSP-IMPROV utterances under ``root`` (see the module docstring for the layout)."""
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
        yield ctx.utterance(path, utterance_id=path.stem, speaker=fields["speaker"],
                            gender=GENDERS[fields["gender"]], raw_label=fields["emotion"], split="", text="")
