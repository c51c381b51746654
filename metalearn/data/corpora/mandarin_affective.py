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

Option ``types``: ``all`` (default) reads every type folder, and wavs without one; otherwise a
``+``-joined list of type folder names, e.g. ``phrase`` (what Paper A reads) or ``phrase+sentence``
(compared lower-case). Wavs of other types, or without a type folder, are excluded and counted per type.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from metalearn.data.corpora.base import ClipInfo, LoadContext, audio_files
from metalearn.data.manifest import Utterance
from metalearn.util.errors import MetalearnError

EXPECTED = "data/{speaker}/{emotion}/{type}/*.wav"
OPTIONS = {"types": "all"}


def _data_dir(root: Path) -> Path:
    """The folder whose children are speaker folders: ``root/data`` when it exists, else ``root``."""
    data = root / "data"
    return data if data.is_dir() else root


def parse_types(types: str) -> frozenset[str] | None:
    """The type folders option ``types`` keeps (lower-cased); None for ``all``."""
    names = frozenset(t.strip().lower() for t in types.split("+") if t.strip())
    if not names or ("all" in names and len(names) > 1):
        raise MetalearnError(f"mandarin_affective option types={types!r}: expected all, or type folder "
                             "names joined by +, e.g. phrase or phrase+sentence")
    return None if names == {"all"} else names


def load(root: Path, ctx: LoadContext, types: str = OPTIONS["types"]) -> Iterator[Utterance | None]:
    """One row per wav under ``data/{speaker}/{emotion}/[{type}/]`` of a kept type; other depths are reported."""
    data = _data_dir(root)
    kept = parse_types(types)
    for path in audio_files(data):
        parts = path.relative_to(data).parts
        if len(parts) == 4:
            speaker, emotion, kind = parts[0], parts[1], parts[2]
        elif len(parts) == 3:
            speaker, emotion, kind = parts[0], parts[1], ""
        else:
            ctx.report.add(path, f"unexpected location (expected {EXPECTED})")
            continue
        if kept is not None and kind.lower() not in kept:
            ctx.excluded[f"type {kind or '(none)'} (not in types)"] += 1
            continue
        raw_label = emotion.lower()
        uid = "_".join(p for p in (speaker, raw_label, kind, path.stem) if p)
        yield ctx.utterance(path, ClipInfo(utterance_id=uid, speaker=speaker, gender="unknown"), raw_label=raw_label)
