"""How long work takes, as it goes and after: progress with ETA (a live tqdm bar on a terminal; in a redirected
log, plain lines, no carriage returns, no escape codes: one when the work starts, one every 30 s, one when it
ends), and the wall time per named stage of one command, written beside its results (``timing.json``) for the
benchmarks (:class:`Stopwatch`)."""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from metalearn.util.fileio import write_json

EVERY_S = 30.0  # seconds between two lines in a log


def progress(total: float, desc: str, unit: str = "it", **kwargs: Any) -> tqdm | LineProgress:
    """A progress bar for ``total`` units (tqdm's ``initial``, ``disable``, ``bar_format`` accepted): tqdm when
    stderr is a terminal, else :class:`LineProgress`. Both take ``update(n)`` and expose ``n`` and ``total``."""
    if sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, mininterval=0.2, dynamic_ncols=True, **kwargs)
    return LineProgress(total, desc, unit, initial=kwargs.get("initial", 0), disable=kwargs.get("disable", False))


class LineProgress:
    """The bar's twin for logs: plain lines ``desc: n/total unit (p%), elapsed, ~eta left``."""

    def __init__(self, total: float, desc: str, unit: str = "it", initial: float = 0, disable: bool = False,
                 every: float = EVERY_S, file: IO[str] | None = None) -> None:
        self.total, self.desc, self.unit, self.n, self.disable = total, desc, unit, initial, disable
        self.initial, self.every, self.file = initial, every, file or sys.stderr
        self.start = self.last = time.monotonic()
        self.closed = False
        self._line(self.start, "started")

    def update(self, n: float = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._line(now)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._line(time.monotonic(), "done")

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _line(self, now: float, state: str = "") -> None:
        if self.disable:
            return
        elapsed = now - self.start
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        done = self.n - self.initial
        left = (self.total - self.n) * elapsed / done if done > 0 and self.total else None
        eta = f", ~{tqdm.format_interval(left)} left" if left is not None and state != "done" else ""
        tail = f", {state}" if state else ""
        self.file.write(f"{self.desc}: {self.n:.0f}/{self.total:.0f} {self.unit}{share}, "
                        f"{tqdm.format_interval(elapsed)} elapsed{eta}{tail}\n")
        self.file.flush()


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
