"""Jobs run side by side in forked workers: the same results as run one after another here (a report's PNG bytes
included), each job's result back under its name, a failing job's error raised to the caller, closures run
without being pickled, torch on one thread in each worker (which keeps a fork after OpenMP from hanging)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from metalearn.configs.load import load_config
from metalearn.report.tables import write_report
from metalearn.run.runner import run_experiment
from metalearn.run.scoring import slowest_first
from metalearn.util.workers import run_forked, usable_workers
from tests.conftest import overrides, tiny_corpora
from tests.test_launch import stable
from tests.test_plots_figures import mock_records

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="workers are forked on Linux only")


def _fail(message: str) -> int:
    raise ValueError(message)


def test_report_figures_drawn_in_workers_equal_those_drawn_here(tmp_path):
    records = mock_records()
    (tmp_path / "workers" / "run").mkdir(parents=True)
    (tmp_path / "here" / "run").mkdir(parents=True)
    forked = write_report(tmp_path / "workers" / "run", records, figure_workers=3)
    here = write_report(tmp_path / "here" / "run", records, figure_workers=1)
    pngs = [name for name in forked if name.endswith(".png")]
    assert len(pngs) >= 8 and list(forked) == list(here)
    for name in pngs:
        assert forked[name].read_bytes() == here[name].read_bytes(), name


@linux_only
def test_jobs_run_in_other_processes_each_result_under_its_name():
    weights = torch.arange(12.0).reshape(3, 4)  # a closure over a tensor: inherited by the fork, never pickled
    jobs = {f"row{i}": (lambda i=i: (os.getpid(), float(weights[i].sum()))) for i in range(3)}
    forked = dict(run_forked(jobs, workers=2))
    assert set(forked) == set(jobs)
    assert {name: total for name, (_, total) in forked.items()} == {"row0": 6.0, "row1": 22.0, "row2": 38.0}
    pids = {pid for pid, _ in forked.values()}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    here = list(run_forked(jobs, workers=1))
    assert [name for name, _ in here] == list(jobs) and {pid for _, (pid, _) in here} == {os.getpid()}


HANG_CHECK = """
import torch
from metalearn.util.workers import run_forked
torch.set_num_threads(2)
a = torch.randn(512, 512)
(a @ a).sum().item()  # the parent opens OpenMP parallel regions on 2 threads
def job():
    return torch.get_num_threads(), float((a @ a).sum() + torch.randn(1 << 20).abs().sum())
print(sorted({threads for _, (threads, _) in run_forked({str(i): job for i in range(4)}, workers=2)}))
"""


@linux_only
def test_workers_run_torch_on_one_thread_after_the_parent_used_two():
    """GNU OpenMP's pool does not survive a fork: a worker opening a 2-thread region after its parent has would wait
    forever (the LOSO folds did); the workers run on one thread, and finish."""
    done = subprocess.run([sys.executable, "-c", HANG_CHECK], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[1]"


ORPHAN_CHECK = """
import os, sys, time
from pathlib import Path
from metalearn.util.workers import run_forked
folder = Path(sys.argv[1])
def job():
    (folder / str(os.getpid())).touch()
    time.sleep(120)
list(run_forked({str(i): job for i in range(2)}, workers=2))
"""


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended but not yet reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


@linux_only
def test_workers_end_when_a_kill_9_ends_their_parent(tmp_path):
    """A worker left waiting on its job queue would outlive a killed run, holding the run folder's lock."""
    parent = subprocess.Popen([sys.executable, "-c", ORPHAN_CHECK, str(tmp_path)])
    deadline = time.monotonic() + 60
    while len(list(tmp_path.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    workers = [int(p.name) for p in tmp_path.iterdir()]
    assert len(workers) == 2 and all(_alive(pid) for pid in workers)
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=30)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers)


@linux_only
def test_a_run_in_workers_equals_one_scored_here_on_one_thread(tmp_path, one_thread):
    """The trials of a run scored in 2 forked workers (one thread each) are those of the same run scored group by
    group in this process on one thread, meta-trained methods included; run.json names the workers."""
    tiny_corpora(tmp_path / "data")
    methods = dict(algorithms=["finetune", "simpleshot", "fomaml", "transfer"], repetitions=1)
    here = run_experiment(load_config(None, overrides(tmp_path, "here", "workers=1", **methods)))
    forked = run_experiment(load_config(None, overrides(tmp_path, "forked", "workers=2", **methods)))
    assert here.complete and forked.complete and here.planned == forked.planned > 0
    assert stable(forked.out / "trials.csv") == stable(here.out / "trials.csv")
    workers = [json.loads((r.out / "run.json").read_text())["workers"] for r in (here, forked)]
    assert workers == [1, 2]


def test_a_failing_job_raises_its_error():
    with pytest.raises(ValueError, match="no rows"):
        dict(run_forked({"a": os.getpid, "b": partial(_fail, "no rows")}, workers=2))


def test_usable_workers_never_more_than_the_jobs():
    assert usable_workers(8, 3) == (3 if sys.platform == "linux" else 1)
    assert usable_workers(1, 5) == 1
    assert 1 <= usable_workers(None, 100) <= os.cpu_count()


def test_a_blocks_slowest_groups_start_first() -> None:
    """Groups that adapt the backbone from audio go to the workers first, then the meta-learners, then the rest (in
    plan order within each), so that a minute-long group never starts last while the other workers idle."""
    plan = ["finetune", "maml", "simpleshot", "full_finetune", "reptile", "majority", "transfer", "full_finetune"]
    groups = [[SimpleNamespace(group=("v", 0, fold, name, 0, 0))] for fold, name in enumerate(plan)]
    order = [g[0].group[3] for g in sorted(groups, key=slowest_first)]
    assert order == ["full_finetune", "full_finetune", "maml", "reptile", "transfer", "finetune", "simpleshot",
                     "majority"]
