"""GitHub Markdown tables, written one way everywhere: ``| a | b |`` rows under an alignment row."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

LEFT, RIGHT, CENTRE, PLAIN = ":--", "--:", ":-:", "---"


def cell(value: object) -> str:
    """A value as a table cell: ``|`` escaped so that a name holding one cannot split the row."""
    return str(value).replace("|", "\\|")


def table(header: Sequence[str], rows: Iterable[Sequence[object]], align: Sequence[str]) -> list[str]:
    """The lines of a table: ``header``, the alignment row (one token per column, e.g. :data:`LEFT`, ``---:``),
    then one line per row of cells (:func:`cell`)."""
    if len(align) != len(header):
        raise ValueError(f"{len(header)} columns but {len(align)} alignments")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"a row of {len(row)} cells in a table of {len(header)} columns")
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return lines
