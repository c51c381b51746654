"""Independent jobs run side by side in forked worker processes, their results handed back to this process.

What it serves: work that cannot use a second core from one process: a report's matplotlib figures (one
thread each), the scoring of a run's groups of trials (small tensor operations that a second OpenMP thread
barely speeds up). :func:`run_forked` forks its workers after the jobs are known, so a job is any callable,
closures over tensors and configs included: nothing is pickled but each job's result on its way back (the
standard library's :class:`concurrent.futures.ProcessPoolExecutor`, fork context; its workers exit when this
process dies). A worker runs torch on one thread: GNU OpenMP's thread pool does not survive a fork, so a forked
child that opens a parallel region after its parent has used one waits forever (seen: the LOSO folds hung at
their first operation with two threads). Off Linux, where forking a process that has started threads is unsafe
(macOS) or impossible (Windows), and with one worker, the jobs run here, one after another: the same results in
the same order.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import TypeVar

T = TypeVar("T")
_JOBS: Mapping = {}  # the jobs of the pool being forked: its workers inherit them (fork copies this module)


def usable_workers(workers: int | None, jobs: int) -> int:
    """How many processes :func:`run_forked` uses: ``workers`` (None: the CPUs this process may run on, its
    affinity: a SLURM job's allocation, ``taskset``), at most one per job, 1 off Linux."""
    if sys.platform != "linux":
        return 1
    return max(1, min(jobs, workers or len(os.sched_getaffinity(0))))


def run_forked(jobs: Mapping[str, Callable[[], T]], workers: int | None = None) -> Iterator[tuple[str, T]]:
    """Run every job of ``jobs`` (name -> a callable without arguments); yield (name, its result) as each ends.

    ``workers``: see :func:`usable_workers`. With more than one, the results come in the order the jobs end, each
    worker on one torch thread; with one, in ``jobs``' order, here, with this process's threads. A job's exception
    is raised here (the jobs not yet started are cancelled).
    """
    global _JOBS
    count = usable_workers(workers, len(jobs))
    if count <= 1:
        for name, job in jobs.items():
            yield name, job()
        return
    if _JOBS:
        raise RuntimeError("run_forked: a pool is already running in this process (nested run_forked)")
    _JOBS = jobs
    try:
        with ProcessPoolExecutor(count, mp_context=multiprocessing.get_context("fork"),
                                 initializer=_one_thread) as pool:
            pending = {pool.submit(_run, name): name for name in jobs}  # forks the workers: they hold the jobs
            try:
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        yield pending.pop(future), future.result()
            finally:
                for future in pending:
                    future.cancel()
    finally:
        _JOBS = {}


def _one_thread() -> None:
    """In a new worker, before any job: torch (when this process has imported it) on one thread."""
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def _run(name: str):
    """In a worker: run job ``name`` of the jobs it inherited."""
    return _JOBS[name]()
