"""RAVDESS (speech) loader.

Layout on disk (the Zenodo audio-only release, 48 kHz)::

    {root}/Actor_{01..24}/{MM}-{VV}-{EE}-{II}-{SS}-{RR}-{AA}.wav      e.g. Actor_01/03-01-05-02-01-01-01.wav
    {root}/{wrapper}/Actor_{01..24}/...                               tolerated (any depth is searched)

Fields (all two digits): MM modality (01 full-AV, 02 video-only, 03 audio-only); VV vocal channel
(01 speech, 02 song); EE emotion 01..08 (``raw_label``, mapped in ``emotions.LABEL_MAPS["ravdess"]``:
neutral calm happy sad angry fear disgust surprise); II intensity (01 normal, 02 strong; kept only in the
id); SS statement (01 "Kids are talking by the door", 02 "Dogs are sitting by the door"; becomes
``text``); RR repetition; AA actor (odd = male, even = female).

Only speech is kept: song files (VV = 02) are counted in ``ctx.excluded`` as
``"song (vocal channel 02)"``. ``speaker`` is ``Actor_{AA}`` (the folder name the corpus itself uses),
taken from the file name, not the folder. ``utterance_id`` is the file stem (unique: it holds the
actor). There is no official split.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from metalearn.data.corpora.base import ClipInfo, LoadContext, audio_files
from metalearn.data.manifest import Utterance

PATTERN = "MM-VV-EE-II-SS-RR-AA.wav (seven two-digit fields, e.g. 03-01-05-02-01-01-01.wav)"
SONG_EXCLUDED = "song (vocal channel 02)"

STATEMENTS: dict[str, str] = {
    "01": "Kids are talking by the door",
    "02": "Dogs are sitting by the door",
}


def parse_name(stem: str) -> list[str] | None:
    """The seven two-digit fields of a RAVDESS file stem, or None when it does not parse."""
    fields = stem.split("-")
    if len(fields) != 7 or not all(len(f) == 2 and f.isdigit() for f in fields):
        return None
    return fields


def load(root: Path, ctx: LoadContext) -> Iterator[Utterance | None]:
    """One row per speech file under ``root``; song is counted as excluded, bad names reported."""
    for path in audio_files(root):
        fields = parse_name(path.stem)
        if fields is None:
            ctx.report.add(path, f"unparseable name (expected {PATTERN})")
            continue
        _modality, channel, emotion, _intensity, statement, _repetition, actor = fields
        if channel == "02":
            ctx.excluded[SONG_EXCLUDED] += 1
            continue
        if channel != "01" or actor == "00":
            ctx.report.add(path, f"unparseable name (vocal channel {channel}, actor {actor}; "
                                 f"expected {PATTERN})")
            continue
        yield ctx.utterance(path, ClipInfo(utterance_id=path.stem, speaker=f"Actor_{actor}",
                                           gender="male" if int(actor) % 2 else "female",
                                           text=STATEMENTS.get(statement, "")), raw_label=emotion)
