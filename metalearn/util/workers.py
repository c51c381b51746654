"""Independent jobs run side by side in forked worker processes, their results handed back to this process.

What it serves: work that cannot use a second core from one process: a report's matplotlib figures (one
thread each), the scoring of a run's groups of trials (small tensor operations that a second OpenMP thread
barely speeds up). :func:`run_forked` forks its workers after the jobs are known, so a job is any callable,
closures over tensors and configs included: nothing is pickled but each job's result on its way back (the
standard library's :class:`concurrent.futures.ProcessPoolExecutor`, fork context). The kernel kills each worker
when this process ends, however it ends, so that a killed run leaves no orphan holding its run folder's lock.
A worker runs torch on one thread: GNU OpenMP's thread pool does not survive a fork, so a forked child that
opens a parallel region after its parent has used one waits forever (seen: the LOSO folds hung at their first
operation with two threads). Off Linux, where forking a process that has started threads is unsafe (macOS) or
impossible (Windows), and with one worker, the jobs run here, one after another: the same results in the same
order.
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


def usable_workers(workers: int | None, jobs: int | None = None) -> int:
    """How many processes :func:`run_forked` uses: ``workers`` (None: the CPUs this process may run on, its
    affinity: a SLURM job's allocation, ``taskset``), at most one per job (of ``jobs``, when given), 1 off Linux."""
    if sys.platform != "linux":
        return 1
    count = workers or len(os.sched_getaffinity(0))
    return max(1, count if jobs is None else min(jobs, count))


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
                                 initializer=_worker_start, initargs=(os.getpid(),)) as pool:
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


def _worker_start(parent: int) -> None:
    """In a new worker, before any job: killed by the kernel when ``parent`` ends (a worker blocked on its job
    queue would otherwise outlive a ``kill -9`` of the run, holding the run folder's lock), and torch (when the
    parent has imported it) on one thread."""
    import ctypes
    import signal

    pr_set_pdeathsig = 1  # <sys/prctl.h>
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # the parent ended before the line above
        os._exit(1)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def _run(name: str):
    """In a worker: run job ``name`` of the jobs it inherited."""
    return _JOBS[name]()
