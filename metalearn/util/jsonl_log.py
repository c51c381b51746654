"""The one keyed, append-only JSON Lines log of the project; it survives a kill at any moment.

Trial records (:class:`metalearn.report.records.TrialLog`, keyed by trial) and LOSO fold records
(:mod:`metalearn.loso.runner`, keyed by fold) are both this log with their own key and fields.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from metalearn.util.errors import MetalearnError
from metalearn.util.fileio import append_durably, cut_torn_tail

log = logging.getLogger(__name__)


class JsonlLog:
    """An append-only JSON Lines log of records, one per key; safe to kill at any moment.

    Each :meth:`append` is one ``write`` and an ``fsync``; opening the log cuts a torn last line (a record
    whose write was interrupted: its work is simply done again). Two lines with one key must agree on
    every field outside ``volatile``. ``defaults``: fields added since older logs were written, with the
    value a line without them is read with.
    """

    def __init__(self, path: str | os.PathLike, key: Callable[[dict], tuple], fields: Sequence[str],
                 volatile: Sequence[str] = (), defaults: Mapping[str, object] | None = None) -> None:
        self.path, self.key, self.fields, self.volatile = Path(path), key, tuple(fields), tuple(volatile)
        self.defaults = dict(defaults or {})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch(exist_ok=True)
        self._repair()
        self.records: dict[tuple, dict] = {}
        for record in self._read():
            self._keep(record)

    def _repair(self) -> None:
        cut = cut_torn_tail(self.path)
        if cut:
            log.warning("%s: dropped a torn last line (%d bytes) left by an interrupted run", self.path, cut)

    def _read(self) -> list[dict]:
        return read_jsonl(self.path, self.fields, defaults=self.defaults)

    def _keep(self, record: dict) -> None:
        key = self.key(record)
        old = self.records.setdefault(key, record)
        stable = [f for f in self.fields if f not in self.volatile]
        if old is not record and any(_differs(old[f], record[f]) for f in stable):
            raise MetalearnError(f"{self.path}: {key} appears twice with different results")

    @property
    def done(self) -> set[tuple]:
        return set(self.records)

    def append(self, record: dict) -> None:
        """Append ``record`` (its ``fields``) in one write, then fsync; a key already logged is skipped."""
        self.extend([record])

    def extend(self, records: Sequence[dict]) -> None:
        """Append ``records`` in one write, then fsync; keys already logged (or repeated) are skipped."""
        new: dict[tuple, dict] = {}
        for r in records:
            key = self.key(r)
            if key not in self.records and key not in new:
                new[key] = {f: r[f] if f in r else self.defaults[f] for f in self.fields}
        if not new:
            return
        append_durably(self.path, "".join(self._encode(r) + "\n" for r in new.values()).encode("utf-8"))
        self.records.update(new)

    def _encode(self, record: dict) -> str:
        """The line (without its newline) that holds ``record`` in the log: its JSON."""
        return json.dumps(record)


def _differs(a: object, b: object) -> bool:
    both_nan = isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    return a != b and not both_nan


def read_jsonl(path: str | os.PathLike, fields: Sequence[str], what: str = "record",
               defaults: Mapping[str, object] | None = None) -> list[dict]:
    """The records of a JSON Lines log, each checked for ``fields``; one line naming the file, line and field.

    A field of ``defaults`` that a line lacks (written before the field existed) takes its default value.
    A torn last line (a writer killed mid-append, no newline yet) is skipped with a warning: its work was
    not finished. Any other line that is not JSON is an error.
    """
    defaults = defaults or {}
    path = Path(path)
    lines = path.read_bytes().split(b"\n")
    records = []
    for i, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
            record = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError):
            if i == len(lines):
                log.warning("%s:%d: ignoring a torn last line", path, i)
                continue
            raise MetalearnError(f"{path}:{i}: not a JSON {what} (a damaged line; delete the line or the file): "
                                 f"{raw[:60].decode('utf-8', 'replace')!r}") from None
        if not isinstance(record, dict):
            raise MetalearnError(f"{path}:{i}: not a JSON {what} (expected an object): {line[:60]!r}")
        for f, value in defaults.items():
            record.setdefault(f, value)
        missing = [f for f in fields if f not in record]
        if missing:
            raise MetalearnError(f"{path}:{i}: {what} lacks field(s) {missing}")
        records.append(record)
    return records
