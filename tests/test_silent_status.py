"""``status`` without torch (issue 23): once a run folder's plan is saved, ``python -m metalearn status RUN_DIR``
counts from it, never imports torch and says what planning says; a stale plan is not used."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from metalearn.configs.load import load_config, saved_config
from metalearn.launch.plan_file import PLAN_FILE, read_plan
from metalearn.launch.status import folder_status, format_status, run_status
from metalearn.run.runner import run_experiment
from tests.conftest import overrides
from tests.test_launch import TINY, tiny_base

PROBE = ("import sys, time; start = time.perf_counter(); from metalearn.cli import main; code = main(sys.argv[1:]); "
         "print('torch imported' if 'torch' in sys.modules else 'no torch', f'{time.perf_counter() - start:.3f}', "
         "file=sys.stderr); sys.exit(code)")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared tiny run folder split in 2, with shard 1 run."""
    base = tiny_base(tmp_path_factory)
    cfg = load_config(str(base / "tiny.yaml"), overrides(base, "status-plan", **TINY))
    run_experiment(cfg, (0, 1), prepare_only=True)
    run_experiment(cfg, (0, 2))
    return base / "status-plan"


def status_subprocess(folder: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, "-c", PROBE, "status", str(folder), *extra], capture_output=True,
                          text=True, env=env, timeout=120)


def test_status_from_the_saved_plan_imports_no_torch(folder: Path) -> None:
    planned = format_status(run_status(saved_config(folder), shards=2))  # plans, and saves the plan
    assert (folder / PLAN_FILE).is_file() and read_plan(folder)
    fast = folder_status(folder, shards=2)
    assert fast is not None and format_status(fast) == planned
    start = time.perf_counter()
    done = status_subprocess(folder, "--shards", "2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == planned
    probe = done.stderr.strip().splitlines()[-1]
    assert probe.startswith("no torch"), probe
    print(f"status from plan.json: {probe.split()[-1]} s in-process, {time.perf_counter() - start:.2f} s with "
          f"interpreter start")


def test_a_stale_plan_is_not_used(folder: Path) -> None:
    run_status(saved_config(folder))
    episodes = sorted(folder.glob("episodes-seed*.jsonl"))[0]
    stat = episodes.stat()
    os.utime(episodes, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # drawn again, say
    assert folder_status(folder) is None and read_plan(folder) is None
    done = status_subprocess(folder)  # plans again (torch), says the same, saves the plan again
    assert done.returncode == 0 and "torch imported" in done.stderr and read_plan(folder)
    (folder / PLAN_FILE).write_text("{\"format\": 1, \"fingerprint\": ")  # damaged: planned again
    assert folder_status(folder) is None
