"""A report's figures drawn side by side, one worker process per CPU.

Each figure is an independent matplotlib job of one to three seconds of one core (constrained layout, then
rasterising: ``python -m cProfile -m metalearn report results/demo`` spends 31 of its 35 s there), and matplotlib
draws in one thread. :func:`draw_all` hands the jobs to forked workers (:class:`concurrent.futures.
ProcessPoolExecutor`): a fork shares the parent's imported matplotlib and the rows, so a worker starts in
milliseconds, and the PNG bytes are the same as drawn in the parent (tests/test_report_render.py). Off Linux (a
forked child of a process with threads may crash on macOS; Windows cannot fork) or with one worker, the jobs run
in this process, one after another.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

Job = Callable[[], Path]  # draws one figure into its file and returns the file's path (picklable: a partial)


def draw_all(jobs: Mapping[str, Job], workers: int | None = None) -> dict[str, Path]:
    """Run every job of ``jobs`` (name -> a figure job) and return {name: the path it wrote}, in ``jobs``' order.

    ``workers``: processes drawing at once (None: the CPUs this process may run on, its affinity: a SLURM job's
    allocation, ``taskset``), never more than there are jobs; with 1, or off Linux, the jobs run here, one after
    another. A job's exception is raised here.
    """
    if sys.platform != "linux":  # fork is safe (and the default start method) on Linux only
        workers = 1
    count = min(len(jobs), workers or len(os.sched_getaffinity(0)))
    if count <= 1:
        return {name: job() for name, job in jobs.items()}
    with ProcessPoolExecutor(count, mp_context=multiprocessing.get_context("fork")) as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        return {name: future.result() for name, future in futures.items()}
