"""The trial log: append-only JSON Lines, one record per finished trial, safe to kill at any moment.

A run appends each batch of finished trials to ``trials.jsonl`` (a shard of a run to
``trials.shard-I-of-N.jsonl``) with one ``write`` and an ``fsync``. A kill can leave at most one torn
last line; opening the log again cuts it off, so the finished trials before it are kept and the trial
it held is simply run again. Readers take every ``trials*.jsonl`` in a folder, keep one record per
trial key and refuse two different results for the same key. Logs written before a field existed (see
:data:`DEFAULTS`: ``meta_seed``, ``layer``, ``features_of``) are read with its default.

The skip log (``skipped.jsonl``, per shard ``skipped.shard-I-of-N.jsonl``) holds, keyed like the trials, the
planned trials that cannot be scored and why (an episode's clip lost its embedding after the manifest was
written): the grid counts them as done, so it completes, and the report says how many were skipped.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from metalearn.fewshot.trials import RECORD_FIELDS, TrialKey, make_trial_key
from metalearn.util.errors import MetalearnError
from metalearn.util.fileio import append_durably, atomic_path, write_atomic
from metalearn.util.jsonl_log import JsonlLog, read_jsonl

log = logging.getLogger(__name__)

TRIALS = "trials.jsonl"
TRIALS_GLOB = "trials*.jsonl"
# Fields that differ between two runs of the same trial (wall time, the run's name).
VOLATILE = ("seconds", "run")
DEFAULTS = {"meta_seed": 0, "layer": "", "features_of": ""}  # a log or table that lacks a field reads it so
_INT_FIELDS = ("k", "seed", "meta_seed", "n_support", "n_query", "repetition", "ways")
_FLOAT_FIELDS = ("accuracy", "macro_f1", "weighted_f1", "uar", "seconds")
CHECKSUM = "sha256"  # the field of a trial log line that holds the SHA-256 of its other fields
DAMAGED = ".damaged"  # suffix of the file a run moves its log's damaged lines to


def trial_key(r: dict) -> TrialKey:
    """The key of a trial or skip record (:func:`make_trial_key`); a record without meta_seed reads as 0."""
    return make_trial_key(r["pretune"], r["algorithm"], r["episode_id"], r["seed"], r.get("meta_seed", 0))


def sort_key(r: dict) -> tuple:
    """A fixed order for tables, independent of the order trials finished in."""
    return (r["pretune"], r["algorithm"], r["protocol"], int(r["k"]), r["episode_id"], int(r["seed"]),
            int(r.get("meta_seed", 0)))


def shard_file(index: int, count: int) -> str:
    """The log name of shard ``index`` (0-based) of ``count``; the whole run when count == 1."""
    return TRIALS if count == 1 else f"trials.shard-{index + 1}-of-{count}.jsonl"


class TrialLog(JsonlLog):
    """The trial log: the project's append-only JSONL log keyed by :func:`trial_key`, with the record fields.

    Opening it repairs a torn last line left by a killed writer and moves damaged lines (see the module doc) to
    ``<log>.damaged``; :meth:`extend` appends a batch in one write and an fsync, skipping trials already logged,
    each line with its ``sha256``.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(path, trial_key, RECORD_FIELDS, VOLATILE, DEFAULTS)

    def _repair(self) -> None:
        super()._repair()
        lines = scan_lines(self.path.read_bytes())
        damaged = [line for line in lines if line.problem]
        if not damaged:
            return
        aside = self.path.with_name(self.path.name + DAMAGED)
        aside.touch(exist_ok=True)
        append_durably(aside, b"".join(line.raw + b"\n" for line in damaged))
        write_atomic(self.path, b"".join(line.raw + b"\n" for line in lines if not line.problem))
        for line in damaged:
            log.warning("%s:%d: trial record %s; moved to %s, the trial is scored again", self.path, line.number,
                        line.problem, aside.name)

    def _read(self) -> list[dict]:
        return _read_lines(self.path)

    def _encode(self, record: dict) -> str:
        return json.dumps(sealed(record))


def checksum(record: dict) -> str:
    """SHA-256 of ``record``'s fields but :data:`CHECKSUM`, as canonical JSON (sorted keys, compact)."""
    content = {k: v for k, v in record.items() if k != CHECKSUM}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def sealed(record: dict) -> dict:
    """``record`` with its :func:`checksum`, computed on the record as it reads back from JSON (so a value JSON
    writes differently, e.g. a numpy float, checks the same on reading)."""
    plain = json.loads(json.dumps({k: v for k, v in record.items() if k != CHECKSUM}))
    return {**plain, CHECKSUM: checksum(plain)}


@dataclasses.dataclass(frozen=True)
class Line:
    """One line of a trial log: its number (from 1), its bytes, its record, or what is wrong with it."""

    number: int
    raw: bytes
    record: dict | None
    problem: str | None


def check_line(raw: bytes) -> tuple[dict | None, str | None]:
    """(record without its checksum, None), or (None, what is wrong): not UTF-8, not a JSON object, or a
    ``sha256`` that disagrees with the content. A record without ``sha256`` (an older log) is taken as it is."""
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "is not UTF-8 text (a damaged line)"
    except json.JSONDecodeError:
        return None, f"is not JSON (a torn or damaged line: {raw[:60].decode('utf-8', 'replace')!r})"
    if not isinstance(record, dict):
        return None, f"is not a JSON object (a damaged line: {raw[:60].decode('utf-8', 'replace')!r})"
    if CHECKSUM in record and record[CHECKSUM] != checksum(record):
        return None, f"does not match its {CHECKSUM} (an edited or damaged line)"
    record.pop(CHECKSUM, None)
    wrong = _wrong_type(record)
    if wrong:
        return None, f"has {wrong} (a damaged or hand-made line)"
    return record, None


def _wrong_type(record: dict) -> str | None:
    """The first number field of ``record`` that holds no number ("accuracy 'high', expected a number")."""
    for name in _INT_FIELDS + _FLOAT_FIELDS:
        value = record.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or (
                name in _INT_FIELDS and not isinstance(value, int)):
            return f"{name} {value!r}, expected {'an integer' if name in _INT_FIELDS else 'a number'}"
    return None


def scan_lines(data: bytes) -> list[Line]:
    """The non-blank lines of a trial log's bytes, each checked by :func:`check_line`."""
    out = []
    for number, raw in enumerate(data.split(b"\n"), 1):
        if raw.strip():
            out.append(Line(number, raw, *check_line(raw)))
    return out


def _read_lines(path: Path) -> list[dict]:
    """The sound records of one trial log (defaults filled in, fields checked); a damaged line is one warning
    naming the file and line, and is left out (its trial counts as not done)."""
    records = []
    for line in scan_lines(path.read_bytes()):
        if line.problem:
            log.warning("%s:%d: trial record %s; left out, a resumed run scores the trial again", path,
                        line.number, line.problem)
            continue
        record = line.record
        for f, value in DEFAULTS.items():
            record.setdefault(f, value)
        missing = [f for f in RECORD_FIELDS if f not in record]
        if missing:
            raise MetalearnError(f"{path}:{line.number}: trial record lacks field(s) {missing}")
        records.append(record)
    return records


def dedupe(records: Iterable[dict], where: str) -> list[dict]:
    """One record per trial key, in :func:`sort_key` order; two different results for one key are an error."""
    kept: dict[tuple, dict] = {}
    for r in records:
        key = trial_key(r)
        old = kept.setdefault(key, r)
        if old is not r and _stable(old) != _stable(r):
            raise MetalearnError(f"{where}: trial {key} appears twice with different results")
    return sorted(kept.values(), key=sort_key)


def _stable(r: dict) -> dict:
    return {f: r[f] for f in RECORD_FIELDS if f not in VOLATILE}


def read_logs(run_dir: str | os.PathLike) -> list[dict]:
    """The records of a folder's trial logs (what a resumed run trusts; a trials.csv alone is only a table)."""
    logs = sorted(Path(run_dir).glob(TRIALS_GLOB))
    return dedupe((r for p in logs for r in _read_lines(p)), str(run_dir))


def read_trials(run_dir: str | os.PathLike) -> list[dict]:
    """Every trial record of a run folder: its ``trials*.jsonl`` logs, else its ``trials.csv``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MetalearnError(f"{run_dir}: no such run folder")
    logs = sorted(run_dir.glob(TRIALS_GLOB))
    if logs:
        return dedupe((r for p in logs for r in _read_lines(p)), str(run_dir))
    if (run_dir / "trials.csv").is_file():
        return dedupe(read_trials_csv(run_dir / "trials.csv"), str(run_dir / "trials.csv"))
    raise MetalearnError(f"{run_dir}: no trial records (expected {TRIALS_GLOB} or trials.csv)")


def write_trials_csv(records: Sequence[dict], path: str | os.PathLike) -> Path:
    """``records`` as CSV with :data:`RECORD_FIELDS` columns, in :func:`sort_key` order, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=RECORD_FIELDS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(DEFAULTS | r for r in sorted(records, key=sort_key))
    return path


def read_trials_csv(path: str | os.PathLike) -> list[dict]:
    """Records from a ``trials.csv``, numbers parsed back (a table without a :data:`DEFAULTS` column, written
    before it existed, reads with its default)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = [DEFAULTS | r for r in csv.DictReader(f)]
    missing = [c for c in RECORD_FIELDS if rows and c not in rows[0]]
    if missing:
        raise MetalearnError(f"{path}: missing column(s) {missing}")
    for r in rows:
        for c in _INT_FIELDS:
            r[c] = int(r[c])
        for c in _FLOAT_FIELDS:
            r[c] = float(r[c])
    return rows


def merge_runs(sources: Sequence[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Merge the trial records of several run folders (shards run apart) into ``out/trials.jsonl``, and their skip
    records into ``out/skipped.jsonl``."""
    records = dedupe((r for s in sources for r in read_trials(s)), ", ".join(map(str, sources)))
    target = TrialLog(Path(out) / TRIALS)
    target.extend(records)
    skips = [r for s in sources for r in read_skips(s)]
    if skips:
        SkipLog(Path(out) / skip_file(0, 1)).extend(skips)
    return target.path


SKIPPED_GLOB = "skipped*.jsonl"
SKIP_FIELDS = ("pretune", "algorithm", "episode_id", "seed", "meta_seed", "protocol", "k", "speaker", "reason")


def skip_file(index: int, count: int) -> str:
    """The skip log of shard ``index`` (0-based) of ``count``, named like its trial log."""
    return "skipped.jsonl" if count == 1 else f"skipped.shard-{index + 1}-of-{count}.jsonl"


class SkipLog(JsonlLog):
    """Planned trials that cannot be scored, keyed by :func:`trial_key`, each with its ``reason`` (one line
    naming the cause, e.g. the clip without an embedding)."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(path, trial_key, SKIP_FIELDS, ("reason",))


def read_skips(run_dir: str | os.PathLike) -> list[dict]:
    """The skip records of a run folder (all shards), one per trial key, in :func:`trial_key` order."""
    kept: dict[tuple, dict] = {}
    for path in sorted(Path(run_dir).glob(SKIPPED_GLOB)):
        for r in read_jsonl(path, SKIP_FIELDS, "skip record"):
            kept.setdefault(trial_key(r), r)
    return [kept[k] for k in sorted(kept)]


def skipped_only(skips: Iterable[dict], records: Iterable[dict]) -> list[dict]:
    """The skip records of trials that have no trial record (a trial scored after all counts as scored)."""
    scored = {trial_key(r) for r in records}
    return [s for s in skips if trial_key(s) not in scored]


def skip_summary(skips: Sequence[dict], shown: int = 3) -> str:
    """One phrase: how many trials were skipped and why (the commonest reasons first, with their counts)."""
    counts: dict[str, int] = {}
    for s in skips:
        counts[s["reason"]] = counts.get(s["reason"], 0) + 1
    reasons = sorted(counts, key=lambda r: (-counts[r], r))
    text = "; ".join(f"{r} ({counts[r]})" for r in reasons[:shown])
    more = f"; {len(reasons) - shown} more reasons in {SKIPPED_GLOB}" if len(reasons) > shown else ""
    return f"{len(skips)} trial{'s' * (len(skips) != 1)} skipped: {text}{more}"
