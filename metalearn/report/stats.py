"""The statistics of the report, as pure functions on numbers (no records, no files).

- :func:`exact_mean`: the correctly rounded mean (``math.fsum``), the same bits in any order of the values.
- :func:`~metalearn.util.intervals.t_interval` (defined in :mod:`metalearn.util.intervals`, the project's one
  interval): mean and 95% t-interval half-width over the finite values.
- :func:`paired_tests`: mean, 95% t-interval and two-sided one-sample t-test of per-speaker differences, for
  many comparisons at once (``scipy.stats.ttest_1samp`` along an axis); :func:`paired_test` for one.
- :func:`holm`: Holm's step-down adjustment of a family of p-values (NaN p-values stay NaN, outside the family).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from metalearn.util.intervals import t_quantile

EQUAL = 1e-12  # a speaker's mean difference this small is equal: a mean of paired differences that cancel
# exactly can round to +-1e-17, while a real one is at least 1 / (queries x episodes)


def exact_mean(values: Iterable[float]) -> float:
    """The mean of the finite ``values`` from an exact sum (order-independent to the bit); NaN when none."""
    finite = [float(v) for v in values if math.isfinite(v)]
    return math.fsum(finite) / len(finite) if finite else math.nan


@dataclass(frozen=True)
class PairedTest:
    """Summary of per-speaker differences [S]: mean, 95% t-interval, p-value, and the speakers' signs."""

    n: int
    mean: float
    low: float
    high: float
    p_value: float
    better: int
    equal: int
    worse: int


def _tests_of_size(block: np.ndarray) -> list[PairedTest]:
    """Paired tests of the rows of ``block`` [C, n]: C samples of n finite differences each."""
    c, n = block.shape
    better, equal, worse = ((block > EQUAL).sum(1), (abs(block) <= EQUAL).sum(1), (block < -EQUAL).sum(1))
    if n < 2:
        mean = block[:, 0] if n else np.full(c, math.nan)
        return [PairedTest(n, float(mean[i]), math.nan, math.nan, math.nan, int(better[i]), int(equal[i]),
                           int(worse[i])) for i in range(c)]
    mean = block.mean(1)
    constant = np.all(block == block[:, :1], axis=1)
    mean[constant] = block[constant, 0]
    half = np.zeros(c)
    p = np.where(block[:, 0] == 0, 1.0, 0.0)  # the constant rows' p: t = 0/0 -> 1, t = +-inf -> 0
    varied = ~constant
    if varied.any():
        half[varied] = t_quantile(n - 1) * block[varied].std(1, ddof=1) / math.sqrt(n)
        from scipy import stats  # on first use, as in util.intervals: seconds that config-only commands skip

        p[varied] = stats.ttest_1samp(block[varied], 0.0, axis=1).pvalue
    return [PairedTest(n, float(mean[i]), float(mean[i] - half[i]), float(mean[i] + half[i]), float(p[i]),
                       int(better[i]), int(equal[i]), int(worse[i])) for i in range(c)]


def paired_tests(samples: Sequence[Sequence[float] | np.ndarray]) -> list[PairedTest]:
    """One :class:`PairedTest` per sample of per-speaker differences [S_i] (NaN dropped), in the input order.

    Each: mean, 95% t-interval (df = n - 1) and the two-sided t-test p of H0: mean = 0 (``ttest_1samp``,
    vectorised over the samples of equal size). Zero variance is handled without scipy: identical
    differences give a zero-width interval and p = 1 when they are all 0 (a method against itself), p = 0
    otherwise (t is infinite). With one speaker the interval and p are NaN. better / equal / worse count
    the differences > 0, == 0, < 0.
    """
    cleaned = [d[np.isfinite(d)] for d in (np.asarray(s, dtype=np.float64).ravel() for s in samples)]
    by_size: dict[int, list[int]] = defaultdict(list)
    for i, d in enumerate(cleaned):
        by_size[d.size].append(i)
    out: list[PairedTest | None] = [None] * len(cleaned)
    for n, where in by_size.items():
        block = np.stack([cleaned[i] for i in where]) if n else np.zeros((len(where), 0))
        for i, test in zip(where, _tests_of_size(block), strict=True):
            out[i] = test
    return out


def paired_test(diffs: Sequence[float] | np.ndarray) -> PairedTest:
    """:func:`paired_tests` of one sample of per-speaker differences [S]."""
    return paired_tests([diffs])[0]


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values [M] for p-values [M] (one family), in the input order.

    With the m finite p-values sorted ascending, p_(1) <= ... <= p_(m), the adjusted value of the i-th is
    max_{j <= i} min(1, (m - j + 1) p_(j)). NaN inputs stay NaN and do not count in m.
    """
    p = np.asarray(p_values, dtype=np.float64).ravel()
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    if finite.size == 0:
        return out
    order = finite[np.argsort(p[finite], kind="stable")]
    m = order.size
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out
