"""A prepared run folder's plan, saved so that ``status`` counts trials without planning (and without torch).

``plan.json`` lists, unit by unit in plan order (a shard is every N-th unit: :func:`metalearn.run.grid.shard_units`),
the trial keys the grid will score, with a fingerprint of what the plan was made from: the bytes of
``config.yaml`` and ``folds.json`` and the size and modification time of each ``episodes-seed*.jsonl``. A plan
whose fingerprint no longer matches the folder (another config, episodes drawn again) is not used; ``status``
then plans again and saves the new plan. This module imports neither torch nor the run's config schema.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from metalearn.util.fileio import write_json

if TYPE_CHECKING:
    from metalearn.run.grid import Unit

PLAN_FILE = "plan.json"
FORMAT = 1

TrialKey = tuple[str, str, str, int, int]  # (pretune, algorithm, episode_id, seed, meta_seed), as the runner's


def fingerprint(out: Path) -> str:
    """What the plan of run folder ``out`` is made from, as one hex digest."""
    digest = hashlib.sha256()
    for name in ("config.yaml", "folds.json"):
        path = out / name
        digest.update(name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b"(absent)") + b"\0")
    for path in sorted(out.glob("episodes-seed*.jsonl")):
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()


def write_plan(out: Path, units: Sequence[Unit]) -> bool:
    """Save ``units``' trial keys as ``out/plan.json``; False when the folder cannot be written (status is
    read-only for whoever cannot write the folder: it plans again next time)."""
    plan = {"format": FORMAT, "fingerprint": fingerprint(out),
            "units": [{"variant": u.variant, "algorithm": u.algorithm, "seed": u.seed, "meta_seed": u.meta_seed,
                       "episodes": [e.episode_id for e in u.episodes]} for u in units]}
    try:
        write_json(out / PLAN_FILE, plan, indent=None)
    except OSError:
        return False
    return True


def read_plan(out: Path) -> list[list[TrialKey]] | None:
    """Each unit's trial keys, in plan order, from ``out/plan.json``; None when it is absent, unreadable or made
    from other inputs than the folder holds now."""
    try:
        plan = json.loads((out / PLAN_FILE).read_text(encoding="utf-8"))
        if plan.get("format") != FORMAT or plan.get("fingerprint") != fingerprint(out):
            return None
        return [[(u["variant"], u["algorithm"], e, int(u["seed"]), int(u["meta_seed"])) for e in u["episodes"]]
                for u in plan["units"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
