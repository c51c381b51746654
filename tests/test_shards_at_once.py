"""Three shards started at the same moment into one prepared run folder, 10 rounds in a row: no process crashes,
and every round's trials equal the unsharded run's (seconds aside). Each round starts from a fresh copy of the
prepared folder, so all three processes save the config, score, append and write the report side by side."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from metalearn.cli import main
from metalearn.report.records import VOLATILE
from tests.conftest import overrides, tiny_corpora

pytestmark = pytest.mark.slow  # 10 rounds of 3 fresh Python processes: a few minutes on 2 cores


TINY = {"algorithms": ["finetune", "simpleshot", "fomaml"], "steps": 5, "chunk": 2}  # tests/conftest.py


def _stable(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if k not in VOLATILE} for r in csv.DictReader(f)]


def test_three_shards_at_once_ten_rounds(tmp_path: Path) -> None:
    tiny_corpora(tmp_path / "data")
    config = tmp_path / "shards.yaml"
    config.write_text("name: shards\n")  # the dataclass defaults and the overrides below, no preset
    assert main(["run", "--config", str(config), *overrides(tmp_path, tmp_path / "whole", **TINY)]) == 0
    assert main(["run", "--config", str(config), "--prepare", *overrides(tmp_path, tmp_path / "prepared", **TINY)]) == 0
    expected = _stable(tmp_path / "whole" / "trials.csv")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for round_ in range(10):
        out = tmp_path / f"round{round_}"
        shutil.copytree(tmp_path / "prepared", out)
        command = [sys.executable, "-m", "metalearn", "run", "--config", str(config), *overrides(tmp_path, out, **TINY)]
        procs = [subprocess.Popen([*command, "--shard", f"{i}/3"], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for i in (1, 2, 3)]
        outputs = [p.communicate(timeout=600)[0] for p in procs]
        crashed = [(i + 1, o[-2000:]) for i, (p, o) in enumerate(zip(procs, outputs, strict=True)) if p.returncode]
        assert not crashed, f"round {round_}: shards {crashed}"
        assert main(["report", str(out)]) == 0
        assert _stable(out / "trials.csv") == expected, f"round {round_}"
