"""The manifest: one row per utterance, the table every later stage reads.

Columns (the manifest contract, docs/architecture.md): utterance_id, path, corpus, speaker, gender, emotion, raw_label,
split, duration_s, sample_rate, text. ``(corpus, utterance_id)`` is unique; ``utterance_id`` is the
corpus's own id. ``path`` is absolute so a manifest works from any working directory.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from metalearn.data.emotions import CANONICAL, GENDERS
from metalearn.util.errors import MetalearnError
from metalearn.util.fileio import atomic_path, make_folder


@dataclasses.dataclass(frozen=True)
class Utterance:
    """One row of the manifest."""

    utterance_id: str
    path: str
    corpus: str
    speaker: str
    gender: str
    emotion: str
    raw_label: str
    split: str
    duration_s: float
    sample_rate: int
    text: str = ""

    def __post_init__(self) -> None:
        if self.emotion not in CANONICAL:
            raise ValueError(f"{self.utterance_id}: emotion {self.emotion!r} is not canonical")
        if self.gender not in GENDERS:
            raise ValueError(f"{self.utterance_id}: gender {self.gender!r} not in {GENDERS}")


COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Utterance))


def write_manifest(utterances: Iterable[Utterance], out: str | os.PathLike) -> Path:
    """Write ``utterances`` as CSV with the contract's columns; the write is atomic.

    An ``out`` whose folder cannot be made or written (a file in the way, read-only) is a one-line error.
    """
    out = Path(out)
    make_folder(out.parent, "manifest folder")
    with atomic_path(out) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for u in utterances:
            row = dataclasses.astuple(u)
            writer.writerow([f"{v:.4f}" if isinstance(v, float) else v for v in row])
    return out


def read_manifest(path: str | os.PathLike) -> list[Utterance]:
    """Read a manifest CSV; a missing column or a bad value is a one-line error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise MetalearnError(f"manifest {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise MetalearnError(f"manifest {path}: unreadable ({type(e).__name__}); expected a UTF-8 CSV (delete it "
                             f"to write it again from the corpus)") from None
    with io.StringIO(text, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise MetalearnError(f"manifest {path}: missing columns {missing}; expected {list(COLUMNS)}")
        rows = []
        for line, rec in enumerate(reader, start=2):
            short = [c for c in COLUMNS if rec.get(c) is None]
            if short:
                raise MetalearnError(f"manifest {path}, line {line}: no value for {short} (a truncated or damaged "
                                     f"line); delete the manifest to write it again from the corpus")
            try:
                rows.append(Utterance(**{**{c: rec[c] for c in COLUMNS},
                                         "duration_s": float(rec["duration_s"]),
                                         "sample_rate": int(rec["sample_rate"])}))
            except ValueError as e:
                raise MetalearnError(f"manifest {path}, line {line}: {e}") from None
    return rows


def count_table(utterances: Sequence[Utterance], rows: str = "speaker", cols: str = "emotion") -> str:
    """A plain-text table of utterance counts, ``rows`` x ``cols`` (any two manifest columns)."""
    counts = Counter((getattr(u, rows), getattr(u, cols)) for u in utterances)
    row_keys = sorted({r for r, _ in counts})
    present = {c for _, c in counts}
    order = CANONICAL if cols == "emotion" else GENDERS if cols == "gender" else sorted(present)
    col_keys = [c for c in order if c in present]
    width = max([len(rows)] + [len(str(r)) for r in row_keys] + [5])
    widths = [max(len(c), 5) for c in col_keys]

    def line(label: str, cells: Sequence[object], total: object) -> str:
        body = " ".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True))
        return f"{label:<{width}} {body}  {total:>5}"

    lines = [line(rows, col_keys, "total")]
    for r in row_keys:
        cells = [counts.get((r, c), 0) for c in col_keys]
        lines.append(line(str(r), cells, sum(cells)))
    totals = [sum(counts.get((r, c), 0) for r in row_keys) for c in col_keys]
    lines.append(line("total", totals, sum(totals)))
    return "\n".join(lines)


def utterance_key(u: Utterance) -> str:
    """The key episodes and caches name an utterance by: ``corpus/utterance_id``."""
    return f"{u.corpus}/{u.utterance_id}"
