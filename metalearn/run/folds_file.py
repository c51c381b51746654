"""``folds.json``, the speaker-fold exchange format: written by every run, read back by ``speakers.folds_file``.

The file is a JSON list with one object per fold, in order::

    [{"fold": 0, "test": ["0013", ...], "validation": ["0011"], "meta_train": ["0012", ...],
      "meta_train_sources": {"iemocap": ["Ses01F", ...]}}, ...]

``fold`` is the fold's 0-based position; ``test``, ``validation`` and ``meta_train`` are lists of speaker ids
(the manifest's ``speaker`` column), pairwise disjoint within a fold, ``test`` non-empty; ``meta_train_sources``
(optional, ``{}`` when none) maps a source corpus to its speakers whose tasks meta-training also uses. Test
speakers are only scored, validation speakers only make choices, meta-training speakers are the only ones learned
from across speakers (docs/architecture.md, "Contracts"). A run writes its folds here (``runner.speaker_folds``); a file
from elsewhere (another run, :mod:`metalearn.run.emobox`) is read in place of the drawn folds with
``speakers.folds_file``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from metalearn.run.grid import Fold, three_way_folds
from metalearn.util.errors import MetalearnError
from metalearn.util.fileio import write_json

if TYPE_CHECKING:
    from metalearn.run.config import SpeakersConfig

PARTS = ("test", "validation", "meta_train")
SOURCES = "meta_train_sources"  # source corpus -> speakers whose tasks meta-training also uses (optional)


def config_folds(sp: SpeakersConfig, speakers: Sequence[str]) -> list[Fold]:
    """The folds of ``speakers`` the config names: ``speakers.folds_file`` when set (read and checked against
    ``speakers``), else drawn by :func:`~metalearn.run.grid.three_way_folds`."""
    if sp.folds_file:
        return read_folds(sp.folds_file, speakers)
    return three_way_folds(speakers, sp.folds, sp.seed, sp.test, sp.validation)


def folds_records(folds: Sequence[Fold]) -> list[dict]:
    """The folds as ``folds.json`` records (lists, not tuples), in order."""
    return [{k: _listed(v) for k, v in dataclasses.asdict(f).items()} for f in folds]


def _listed(value: object) -> object:
    """Tuples as lists, also inside a dict (``meta_train_sources``), as JSON writes them."""
    if isinstance(value, dict):
        return {k: _listed(v) for k, v in sorted(value.items())}
    return list(value) if isinstance(value, tuple) else value


def write_folds(path: str | os.PathLike, folds: Sequence[Fold]) -> Path:
    """Write ``folds`` as ``folds.json`` (atomic); returns the path."""
    write_json(path, folds_records(folds))
    return Path(path)


def read_folds(path: str | os.PathLike, speakers: Sequence[str] | None = None) -> list[Fold]:
    """The folds of a ``folds.json`` file, checked; one line naming the file, fold and field of the first fault.

    ``speakers``: the speakers the run has (its manifest's, after ``speakers.exclude``); a fold naming any
    other speaker is refused. Speakers of the run that a fold does not name take no part in that fold.
    """
    path = Path(path)
    if not path.is_file():
        raise MetalearnError(f"config key 'speakers.folds_file': {path} is not a file (expected a folds.json)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MetalearnError(f"folds file {path}: not valid JSON ({type(e).__name__})") from None
    if not isinstance(data, list) or not data:
        raise MetalearnError(f"folds file {path}: expected a non-empty JSON list of "
                             f"{{\"fold\", \"test\", \"validation\", \"meta_train\"}} objects")
    folds = [_fold(rec, i, f"folds file {path}, fold {i}") for i, rec in enumerate(data)]
    if speakers is not None:
        known = set(speakers)
        for f in folds:
            unknown = sorted({s for part in PARTS for s in getattr(f, part)} - known)
            if unknown:
                raise MetalearnError(f"folds file {path}, fold {f.fold}: speakers {unknown[:5]} "
                                     f"{'(and more) ' if len(unknown) > 5 else ''}are not speakers of the target "
                                     f"manifest (after speakers.exclude)")
    return folds


def _fold(rec: object, index: int, where: str) -> Fold:
    """One record -> :class:`Fold`, every field present, typed and the three parts pairwise disjoint."""
    if not isinstance(rec, dict) or set(rec) - {SOURCES} != {"fold", *PARTS}:
        got = sorted(rec) if isinstance(rec, dict) else type(rec).__name__
        raise MetalearnError(f"{where}: expected an object with exactly fold, test, validation, meta_train (and "
                             f"optionally {SOURCES}); got {got}")
    if rec["fold"] != index or isinstance(rec["fold"], bool):
        raise MetalearnError(f"{where}: field 'fold' is {rec['fold']!r}; expected {index} (the 0-based position)")
    for part in PARTS:
        value = rec[part]
        if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
            raise MetalearnError(f"{where}: field {part!r} must be a list of speaker ids, got {value!r}")
        if len(set(value)) != len(value):
            raise MetalearnError(f"{where}: field {part!r} names a speaker twice")
    if not rec["test"]:
        raise MetalearnError(f"{where}: field 'test' is empty (a fold scores at least one speaker)")
    for a, b in itertools.combinations(PARTS, 2):
        both = sorted(set(rec[a]) & set(rec[b]))
        if both:
            raise MetalearnError(f"{where}: speakers {both} are in both {a!r} and {b!r} (the parts must be disjoint)")
    sources = rec.get(SOURCES, {})
    if not isinstance(sources, dict) or not all(
            isinstance(c, str) and isinstance(v, list) and all(isinstance(s, str) and s for s in v)
            for c, v in sources.items()):
        raise MetalearnError(f"{where}: field {SOURCES!r} must map a source corpus to a list of speaker ids, "
                             f"got {sources!r}")
    return Fold(index, *(tuple(rec[p]) for p in PARTS), {c: tuple(v) for c, v in sources.items()})
