"""The project's one confidence interval: the mean and 95% Student-t half-width of a sample.

It lives here, below every package, so that the report's summaries (:mod:`metalearn.report.stats`), the LOSO
tables and the synthetic corpus's calibration all state their spread the same way.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np


@functools.lru_cache(maxsize=4096)
def t_quantile(df: int, level: float = 0.95) -> float:
    """The two-sided Student-t critical value: t_{(1 + level) / 2, df} (cached per df: the report computes tens
    of thousands of intervals). scipy.stats is imported here, on first use: it costs seconds, and commands that
    only read a config (``--print-config``, ``status``) import this module without computing an interval."""
    from scipy import stats

    return float(stats.t.ppf((1 + level) / 2, df))


def t_interval(values: Sequence[float] | np.ndarray) -> tuple[float, float, int]:
    """(mean, 95% t half-width, n) of the finite values [n]; half-width NaN when n < 2, mean NaN when n = 0."""
    arr = np.asarray(values, dtype=np.float64).ravel()
    arr = arr[np.isfinite(arr)]
    n = int(arr.size)
    if n == 0:
        return math.nan, math.nan, 0
    if n == 1:
        return float(arr[0]), math.nan, 1
    return float(arr.mean()), t_quantile(n - 1) * float(arr.std(ddof=1)) / math.sqrt(n), n
