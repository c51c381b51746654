"""Mandarin Affective Speech (LDC2007S09) loader.

Layout on disk (UNVERIFIED: written from the LDC catalogue description, not checked against a real copy)::

    {root}/data/{speaker}/{emotion}/{type}/*.wav      type: phrase, sentence, word, ...
    {root}/data/{speaker}/{emotion}/*.wav             tolerated: no type folder

``root`` may be the corpus's top folder (holding ``data/``) or ``data/`` itself. The class is the
emotion folder's name, lower-cased (neutral, anger, elation, panic, sadness; mapped in
``emotions.LABEL_MAPS["mandarin_affective"]``); an unknown folder name is reported as a problem.

Gender is ``unknown`` for everyone: no speaker table for this corpus is known to the project.
There is no official split (``split`` is empty) and no transcript is read (``text`` is empty).
``utterance_id`` is ``{speaker}_{emotion}_{type}_{stem}`` (``{speaker}_{emotion}_{stem}`` without a type
folder), unique because the same stem recurs across speakers, emotions and types.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from metalearn.data.corpora.base import LoadContext, audio_files
from metalearn.data.manifest import Utterance

EXPECTED = "data/{speaker}/{emotion}/{type}/*.wav"


def _data_dir(root: Path) -> Path:
    """The folder whose children are speaker folders: ``root/data`` when it exists, else ``root``."""
    data = root / "data"
    return data if data.is_dir() else root


def load(root: Path, ctx: LoadContext) -> Iterator[Utterance | None]:
    """One row per wav under ``data/{speaker}/{emotion}/[{type}/]``; other depths are reported."""
    data = _data_dir(root)
    for path in audio_files(data):
        parts = path.relative_to(data).parts
        if len(parts) == 4:
            speaker, emotion, kind = parts[0], parts[1], parts[2]
        elif len(parts) == 3:
            speaker, emotion, kind = parts[0], parts[1], ""
        else:
            ctx.report.add(path, f"unexpected location (expected {EXPECTED})")
            continue
        raw_label = emotion.lower()
        uid = "_".join(p for p in (speaker, raw_label, kind, path.stem) if p)
        yield ctx.utterance(path, utterance_id=uid, speaker=speaker, gender="unknown",
                            raw_label=raw_label)
