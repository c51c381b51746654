"""CREMA-D loader.

Layout on disk (the GitHub/Kaggle release)::

    {root}/AudioWAV/{actor}_{sentence}_{EMO}_{level}.wav     e.g. 1001_DFA_ANG_XX.wav
    {root}/VideoDemographics.csv                             ActorID, Age, Sex, Race, Ethnicity

``root`` may also be ``AudioWAV/`` itself (the demographics file is then looked for beside it).
actor: 1001-1091 (the speaker id); sentence: one of 12 three-letter codes (its words become ``text``;
an unknown code gives empty text); EMO: ANG DIS FEA HAP NEU SAD (``raw_label``, mapped in
``emotions.LABEL_MAPS["cremad"]``); level: LO MD HI XX (intensity, kept only in the id).
``utterance_id`` is the file stem; there is no official split.

Gender comes from the Sex column (Female/Male). Without ``VideoDemographics.csv`` every speaker is
``unknown`` and one warning is logged; an actor absent from the file is ``unknown`` too.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator
from pathlib import Path

from metalearn.data.corpora.base import ClipInfo, LoadContext, audio_files
from metalearn.data.manifest import Utterance

log = logging.getLogger(__name__)

PATTERN = "{actor}_{sentence}_{EMO}_{level}.wav"
DEMOGRAPHICS = "VideoDemographics.csv"

SENTENCES: dict[str, str] = {
    "IEO": "It's eleven o'clock",
    "TIE": "That is exactly what happened",
    "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about",
    "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before",
    "TSI": "The surface is slick",
    "WSI": "We'll stop in a couple of minutes",
}


def read_demographics(path: Path) -> dict[str, str]:
    """Actor id -> gender (female, male, unknown) from ``VideoDemographics.csv``."""
    genders: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        for rec in csv.DictReader(f):
            actor = (rec.get("ActorID") or "").strip()
            sex = (rec.get("Sex") or "").strip().lower()
            if actor:
                genders[actor] = sex if sex in ("female", "male") else "unknown"
    return genders


def _locate(root: Path) -> tuple[Path, Path | None]:
    """(folder holding the wavs, demographics file or None)."""
    audio_dir = root / "AudioWAV" if (root / "AudioWAV").is_dir() else root
    for candidate in (root / DEMOGRAPHICS, audio_dir.parent / DEMOGRAPHICS):
        if candidate.is_file():
            return audio_dir, candidate
    return audio_dir, None


def load(root: Path, ctx: LoadContext) -> Iterator[Utterance | None]:
    """One row per ``AudioWAV/*.wav``; a name not matching :data:`PATTERN` is reported."""
    audio_dir, demographics = _locate(root)
    if demographics is None:
        log.warning("cremad: %s not found under %s; every speaker's gender is 'unknown'", DEMOGRAPHICS, root)
        genders: dict[str, str] = {}
    else:
        genders = read_demographics(demographics)
    for path in audio_files(audio_dir):
        fields = path.stem.split("_")
        if len(fields) != 4 or not fields[0].isdigit() or not all(fields[1:]):
            ctx.report.add(path, f"unparseable name (expected {PATTERN})")
            continue
        actor, sentence, emo, _level = fields
        yield ctx.utterance(path, ClipInfo(utterance_id=path.stem, speaker=actor, gender=genders.get(actor, "unknown"),
                                           text=SENTENCES.get(sentence, "")), raw_label=emo)
