"""``status RUN_DIR``: done / planned trials per shard add up to the grid, follow the trial logs, and a shard is
shown running exactly while a process holds its lock."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from metalearn.cli import main
from metalearn.configs.load import load_config, saved_config
from metalearn.launch.status import format_status, plan_grid, run_status
from metalearn.run.grid import shard_units
from metalearn.run.runner import run_experiment
from metalearn.util.lock import run_lock
from tests.conftest import overrides
from tests.test_launch import TINY, tiny_base


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_base(tmp_path_factory)


@pytest.fixture(scope="module")
def split(base: Path) -> Path:
    """A run folder split in 3, prepared, with shards 1 and 3 run and shard 2 not."""
    cfg = load_config(str(base / "tiny.yaml"), overrides(base, "split", **TINY))
    run_experiment(cfg, (0, 1), prepare_only=True)
    for index in (0, 2):
        run_experiment(cfg, (index, 3))
    return base / "split"


def test_counts_per_shard_add_up_to_the_grid_and_follow_the_logs(split: Path) -> None:
    status = run_status(saved_config(split))
    units = plan_grid(load_config(str(split / "config.yaml"), [f"out={split}"]))
    planned = [sum(len(u.episodes) for u in shard_units(units, i, 3)) for i in range(3)]
    assert [s.shard for s in status.shards] == [(0, 3), (1, 3), (2, 3)]  # the count comes from the shard logs
    assert [s.planned for s in status.shards] == planned and all(planned)
    assert [s.done for s in status.shards] == [planned[0], 0, planned[2]]
    assert status.running == [] and all(s.holder is None for s in status.shards)
    again = run_status(saved_config(split), shards=2)  # counted as another split: the same trials, shared differently
    assert sum(s.planned for s in again.shards) == sum(planned)
    assert sum(s.done for s in again.shards) == planned[0] + planned[2]
    text = format_status(status).splitlines()
    assert text[1] == f"  {planned[0] + planned[2]}/{sum(planned)} trials done"
    assert text[4].split() == ["2/3", "0", str(planned[1]), "not", "running"]
    assert text[3].split()[-1] == text[5].split()[-1] == "finished" and text[-1] == "  running: nothing"


def test_a_shard_is_running_while_its_lock_is_held(split: Path, capsys: pytest.CaptureFixture) -> None:
    with run_lock(split, (1, 3)):
        assert main(["status", str(split)]) == 0
        shown = capsys.readouterr().out.splitlines()
    row = next(x for x in shown if x.strip().startswith("2/3"))
    assert f"running: shard 2/3 of a split run (pid {os.getpid()} on " in row
    assert "running: nothing" not in shown
    assert main(["status", str(split)]) == 0  # released: not running any more
    assert "  running: nothing" in capsys.readouterr().out.splitlines()


def test_unprepared_and_foreign_folders(split: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    shutil.copy(split / "config.yaml", fresh / "config.yaml")
    assert main(["status", str(fresh)]) == 0
    out = capsys.readouterr().out
    assert "is not prepared (no episodes-seed0.jsonl)" in out and "running: nothing" in out
    assert main(["status", str(tmp_path / "nothing-here")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "no config.yaml" in err and "\n" not in err
