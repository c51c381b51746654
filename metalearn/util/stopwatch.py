"""Wall time per named stage of one command, written beside its results (``timing.json``) for the benchmarks."""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from metalearn.util.fileio import write_json


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


class Stopwatch:
    """Seconds per stage, in the order first started; a stage entered twice adds up."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def write(self, path: Path) -> None:
        """``{"stages": {name: seconds}, "peak_rss_mb": ...}`` at ``path`` (atomic)."""
        write_json(path, {"stages": {k: round(v, 3) for k, v in self.seconds.items()},
                          "peak_rss_mb": round(peak_rss_mb(), 1)})
