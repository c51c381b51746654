"""``python -m metalearn status RUN_DIR``: how far a run folder is, shard by shard, and who works in it now.

Read-only: the grid is planned from what the run folder already holds (its ``config.yaml``, its saved
episodes, its trained pretune variants, its manifests), the trial logs say what is done, and the lock
folder ``.locks/`` says which processes hold the folder at this moment (a held lock is a live process;
a lock file left by a killed one is free, so it is never shown as running).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from metalearn.launch.plan_file import TrialKey, read_plan, write_plan
from metalearn.util.errors import MetalearnError
from metalearn.util.lock import LOCKS, describe, held, lock_name

if TYPE_CHECKING:
    from metalearn.run.config import ExperimentConfig
    from metalearn.run.grid import Unit

LAUNCH_FILE = "launch.json"  # what `launch` submitted (executor, job ids, log folder), kept in the run folder
_SHARD_LOG = re.compile(r"trials\.shard-(\d+)-of-(\d+)\.jsonl$")


@dataclass(frozen=True)
class ShardStatus:
    shard: tuple[int, int]        # (0-based index, count)
    planned: int                  # trials of this shard's units
    done: int                     # of those, trials with a record (in any log of the folder)
    holder: str | None            # who holds this shard's lock now (None: nobody runs it)


@dataclass(frozen=True)
class RunStatus:
    out: Path
    name: str
    shards: list[ShardStatus]     # empty when the run is not prepared yet
    not_prepared: str | None      # why the grid cannot be planned yet (None: it can)
    running: list[str]            # every holder of a lock in the folder, in words
    launch: dict | None           # the run's launch.json, if `launch` submitted it


def plan_grid(cfg: ExperimentConfig) -> list[Unit]:
    """The units of ``cfg``'s whole grid, from what its prepared run folder holds; writes nothing.

    The same steps as the runner's before it scores (manifest, folds, variants, saved episodes, plan), with
    variants never trained here. Raises a one-line :class:`MetalearnError` when the folder is not prepared.
    """
    from metalearn.run.runner import plan, prepared, target_rows

    out = Path(cfg.out)
    missing = [s for s in cfg.seeds if not (out / f"episodes-seed{s}.jsonl").is_file()]
    if missing:
        raise MetalearnError(f"{out} is not prepared (no episodes-seed{missing[0]}.jsonl); prepare it first: "
                             f"python -m metalearn run --config ... --prepare (or launch)")
    inputs = prepared(cfg, target_rows(cfg), out, train=False)
    return plan(cfg, inputs.variants, inputs.folds, inputs.episodes)


def trial_counts(units: list[list[TrialKey]], have: set[tuple], shards: int) -> list[tuple[int, int]]:
    """(planned, done) trials of each of ``shards`` shards (every N-th unit, as
    :func:`metalearn.run.grid.shard_units` deals them) of ``units``, each unit's trial keys; ``have`` holds the
    keys of the logged trials and skipped trials."""
    counts = []
    for index in range(shards):
        keys = [k for unit in units[index::shards] for k in unit]
        counts.append((len(keys), sum(k in have for k in keys)))
    return counts


def shard_count(out: Path, launch: dict | None) -> int:
    """How many shards the run was split into: its launch.json's, else its shard logs' and locks', else 1."""
    if launch and isinstance(launch.get("shards"), int):
        return launch["shards"]
    counts = [int(m[2]) for p in out.glob("trials.shard-*.jsonl") if (m := _SHARD_LOG.search(p.name))]
    counts += [int(p.stem.rsplit("-", 1)[-1]) for p in (out / LOCKS).glob("shard-*-of-*.lock")
               if p.stem.rsplit("-", 1)[-1].isdigit()]
    return max(counts, default=1)


def running(out: Path) -> dict[str, str]:
    """Lock file name -> its holder in words, for every lock of ``out`` held by a live process now."""
    return {p.name: describe(p) for p in sorted((out / LOCKS).glob("shard-*-of-*.lock")) if held(p)}


def read_launch(out: Path) -> dict | None:
    path = out / LAUNCH_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def run_status(cfg: ExperimentConfig, shards: int | None = None) -> RunStatus:
    """The status of run folder ``cfg.out`` split into ``shards`` parts (default: as it was launched); ``cfg`` is
    the config its runs saved (:func:`metalearn.configs.load.saved_config`). The plan is saved for
    :func:`folder_status` (``plan.json``)."""
    out = Path(cfg.out)
    try:
        units = plan_grid(cfg)
    except MetalearnError as e:
        launch = read_launch(out)
        _shards(shards, out, launch)
        return RunStatus(out, cfg.name, [], str(e), list(running(out).values()), launch)
    write_plan(out, units)
    return status_of_plan(out, cfg.name, [[u.trial_key(e) for e in u.episodes] for u in units], shards)


def folder_status(run_dir: str | Path, shards: int | None = None) -> RunStatus | None:
    """The status of a run folder from its saved plan (``plan.json``, current): no planning, no torch; None when
    the folder has no current plan (then :func:`run_status` plans, and saves one)."""
    import yaml

    out = Path(run_dir)
    units = read_plan(out)
    if units is None:
        return None
    try:
        saved = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    name = saved.get("name") if isinstance(saved, dict) else None
    return status_of_plan(out, str(name or out.name), units, shards)


def _shards(shards: int | None, out: Path, launch: dict | None) -> int:
    count = shards or shard_count(out, launch)
    if count < 1:
        raise MetalearnError(f"--shards {count}: expected N >= 1")
    return count


def status_of_plan(out: Path, name: str, units: list[list[TrialKey]], shards: int | None) -> RunStatus:
    """The status of run folder ``out`` whose plan is ``units`` (each unit's trial keys, in plan order)."""
    from metalearn.report.records import read_logs, read_skips, trial_key

    launch = read_launch(out)
    count = _shards(shards, out, launch)
    held = running(out)
    have = {trial_key(r) for r in [*read_logs(out), *read_skips(out)]}  # a skipped trial is done
    rows = [ShardStatus((i, count), planned, done, held.get(lock_name((i, count))))
            for i, (planned, done) in enumerate(trial_counts(units, have, count))]
    return RunStatus(out, name, rows, None, list(held.values()), launch)


def format_status(status: RunStatus) -> str:
    """The status as the lines ``status`` prints."""
    lines = [f"{status.out} ({status.name})"]
    if status.not_prepared:
        lines.append(f"  {status.not_prepared}")
    else:
        planned = sum(s.planned for s in status.shards)
        done = sum(s.done for s in status.shards)
        lines.append(f"  {done}/{planned} trials done" + (", complete" if done == planned else ""))
        lines.append(f"  {'shard':<8} {'done':>7} {'planned':>7}  state")
        for s in status.shards:
            state = ("running: " + s.holder if s.holder else "finished" if s.done == s.planned
                     else "not running")
            lines.append(f"  {s.shard[0] + 1}/{s.shard[1]:<6} {s.done:>7} {s.planned:>7}  {state}")
    shown = {s.holder for s in status.shards}
    others = [h for h in status.running if h not in shown]
    lines += [f"  running: {h}" for h in others]
    if not status.running:
        lines.append("  running: nothing")
    if status.launch:
        jobs = status.launch.get("jobs", {})
        lines.append(f"  launched on {status.launch.get('executor')}: "
                     + ", ".join(f"{k} {v}" for k, v in jobs.items() if v) + f" (logs: {status.launch.get('logs')})")
    return "\n".join(lines)


def main(cfg: ExperimentConfig, shards: int | None = None) -> int:
    """``python -m metalearn status RUN_DIR [--shards N]``, ``cfg`` being the config RUN_DIR's runs saved (the
    command itself first tries :func:`folder_status`: no config, no torch)."""
    print(format_status(run_status(cfg, shards)))
    return 0
