"""The trial log: append-only JSON Lines, one record per finished trial, safe to kill at any moment.

A run appends each batch of finished trials to ``trials.jsonl`` (a shard of a run to
``trials.shard-I-of-N.jsonl``) with one ``write`` and an ``fsync``. A kill can leave at most one torn
last line; opening the log again cuts it off, so the finished trials before it are kept and the trial
it held is simply run again. Readers take every ``trials*.jsonl`` in a folder, keep one record per
trial key and refuse two different results for the same key.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from metalearn.fewshot.trials import RECORD_FIELDS
from metalearn.util.errors import MetalearnError
from metalearn.util.fileio import atomic_path
from metalearn.util.jsonl_log import JsonlLog, read_jsonl

log = logging.getLogger(__name__)

TRIALS = "trials.jsonl"
TRIALS_GLOB = "trials*.jsonl"
# Fields that differ between two runs of the same trial (wall time, the run's name).
VOLATILE = ("seconds", "run")
_INT_FIELDS = ("k", "seed", "n_support", "n_query", "repetition", "ways")
_FLOAT_FIELDS = ("accuracy", "macro_f1", "weighted_f1", "uar", "seconds")


def trial_key(r: dict) -> tuple[str, str, str, int]:
    """What identifies a trial: (pretune, algorithm, episode_id, seed)."""
    return r["pretune"], r["algorithm"], r["episode_id"], int(r["seed"])


def sort_key(r: dict) -> tuple:
    """A fixed order for tables, independent of the order trials finished in."""
    return r["pretune"], r["algorithm"], r["protocol"], int(r["k"]), r["episode_id"], int(r["seed"])


def shard_file(index: int, count: int) -> str:
    """The log name of shard ``index`` (0-based) of ``count``; the whole run when count == 1."""
    return TRIALS if count == 1 else f"trials.shard-{index + 1}-of-{count}.jsonl"


class TrialLog(JsonlLog):
    """The trial log: the project's append-only JSONL log keyed by :func:`trial_key`, with the record fields.

    Opening it repairs a torn last line left by a killed writer; :meth:`extend` appends a batch in one
    write and an fsync, skipping trials already logged.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(path, trial_key, RECORD_FIELDS, VOLATILE)


def _read_lines(path: Path) -> list[dict]:
    return read_jsonl(path, RECORD_FIELDS, "trial record")


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
        writer.writerows(sorted(records, key=sort_key))
    return path


def read_trials_csv(path: str | os.PathLike) -> list[dict]:
    """Records from a ``trials.csv``, numbers parsed back."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
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
    """Merge the trial records of several run folders (shards run apart) into ``out/trials.jsonl``."""
    records = dedupe((r for s in sources for r in read_trials(s)), ", ".join(map(str, sources)))
    target = TrialLog(Path(out) / TRIALS)
    target.extend(records)
    return target.path
