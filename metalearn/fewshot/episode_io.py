"""Episode files: the evaluation episodes of a run as JSON Lines, saved once and replayed by every trial.

One line per :class:`~metalearn.fewshot.episodes.Episode` (its dataclass fields), then one line per
:class:`~metalearn.fewshot.episodes.Skipped` episode with its reason under ``"skipped"``. Reading checks every
field's presence and type and names the file, line and field of the first bad one; fields added later (the
drawing rule, the sentence ids) take their defaults in files saved before them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import MISSING, asdict, fields
from pathlib import Path

from metalearn.fewshot.episodes import Episode, Skipped
from metalearn.util.errors import MetalearnError
from metalearn.util.fileio import write_atomic


def save_episodes(path: str | os.PathLike, episodes: Sequence[Episode], skipped: Sequence[Skipped] = ()) -> Path:
    """JSON Lines, one episode per line, then one line per skipped episode (``"skipped": reason``); atomic."""
    lines = [json.dumps(asdict(e)) for e in episodes]
    for s in skipped:
        rec = asdict(s)
        rec["skipped"] = rec.pop("reason")
        lines.append(json.dumps(rec))
    write_atomic(path, "".join(line + "\n" for line in lines))
    return Path(path)


_VALID = {
    "str": lambda v: isinstance(v, str),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "tuple[str, ...]": lambda v: isinstance(v, list) and all(isinstance(e, str) for e in v),
    "tuple[int, ...]": lambda v: isinstance(v, list) and all(isinstance(e, int) and not isinstance(e, bool) for e in v),
}


def _parse(cls: type, rec: dict, where: str) -> Episode | Skipped:
    """Build ``cls`` from a JSON record, checking every field's presence and type."""
    extra = sorted(set(rec) - {f.name for f in fields(cls)})
    if extra:
        raise MetalearnError(f"{where}: unknown field {extra[0]!r}")
    values = {}
    for f in fields(cls):
        if f.name not in rec:
            if f.default is MISSING:
                raise MetalearnError(f"{where}: missing field {f.name!r}")
            continue
        v = rec[f.name]
        if not _VALID[f.type](v):
            raise MetalearnError(f"{where}, field {f.name!r}: bad value {v!r} (expected {f.type})")
        values[f.name] = tuple(v) if isinstance(v, list) else v
    try:
        return cls(**values)
    except ValueError as e:
        raise MetalearnError(f"{where}, {e}") from None


def load_episodes(path: str | os.PathLike) -> tuple[list[Episode], list[Skipped]]:
    """Read a :func:`save_episodes` file back; a bad line is a MetalearnError naming file, line and field."""
    path = Path(path)
    if not path.is_file():
        raise MetalearnError(f"episodes file {path} does not exist")
    episodes: list[Episode] = []
    skipped: list[Skipped] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"episodes file {path}, line {n}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise MetalearnError(f"{where}: not valid JSON ({e.msg})") from None
        if not isinstance(rec, dict):
            raise MetalearnError(f"{where}: expected a JSON object")
        if "skipped" in rec:
            skipped.append(_parse(Skipped, {("reason" if f == "skipped" else f): v for f, v in rec.items()}, where))
        else:
            episodes.append(_parse(Episode, rec, where))
    return episodes, skipped
