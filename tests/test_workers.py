"""Jobs run side by side in forked workers: the same results as run one after another here (a report's PNG bytes
included), each job's result back under its name, a failing job's error raised to the caller, closures run
without being pickled, torch on one thread in each worker (which keeps a fork after OpenMP from hanging)."""

from __future__ import annotations

import os
import subprocess
import sys
from functools import partial

import pytest
import torch

from metalearn.report.tables import write_report
from metalearn.util.workers import run_forked, usable_workers
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


def test_a_failing_job_raises_its_error():
    with pytest.raises(ValueError, match="no rows"):
        dict(run_forked({"a": os.getpid, "b": partial(_fail, "no rows")}, workers=2))


def test_usable_workers_never_more_than_the_jobs():
    assert usable_workers(8, 3) == (3 if sys.platform == "linux" else 1)
    assert usable_workers(1, 5) == 1
    assert 1 <= usable_workers(None, 100) <= os.cpu_count()
