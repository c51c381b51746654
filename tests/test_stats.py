"""The report's statistics: exact means, t-intervals, paired t-tests and Holm against independent computations."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from scipy import stats

from metalearn.report.stats import exact_mean, holm, paired_test, paired_tests
from metalearn.util.intervals import t_interval


def test_exact_mean_is_exact_and_the_same_bits_in_any_order():
    values = [1e16, 1.0, -1e16, 0.1, 0.2, 0.3] * 5
    assert exact_mean([1e16, 1.0, -1e16]) == 1 / 3 != float(np.mean([1e16, 1.0, -1e16]))
    means = set()
    for seed in range(20):
        random.Random(seed).shuffle(values)
        means.add(exact_mean(values))
    assert len(means) == 1
    assert math.isnan(exact_mean([])) and exact_mean([2.0, math.nan]) == 2.0


def test_t_interval_equals_scipy():
    rng = np.random.default_rng(0)
    for n in (2, 3, 10, 50):
        values = rng.normal(size=n)
        mean, half, count = t_interval([*values, math.nan])  # non-finite values are dropped
        low, high = stats.t.interval(0.95, n - 1, loc=values.mean(), scale=stats.sem(values))
        assert count == n and mean == pytest.approx(values.mean(), rel=1e-14)
        assert half == pytest.approx((high - low) / 2, rel=1e-12)
    assert t_interval([0.5])[2] == 1 and math.isnan(t_interval([0.5])[1]) and t_interval([])[2] == 0


def test_paired_test_p_equals_scipys_paired_t_test():
    method = np.array([0.61, 0.55, 0.72, 0.48, 0.66, 0.59])  # per-speaker means of two methods
    reference = np.array([0.58, 0.57, 0.65, 0.41, 0.60, 0.60])
    t = paired_test(method - reference)
    assert t.p_value == pytest.approx(stats.ttest_rel(method, reference).pvalue, rel=1e-12)
    d = method - reference
    half = stats.t.ppf(0.975, 5) * d.std(ddof=1) / math.sqrt(6)
    assert (t.mean, t.low, t.high) == pytest.approx((d.mean(), d.mean() - half, d.mean() + half), rel=1e-12)
    assert (t.n, t.better, t.equal, t.worse) == (6, 4, 0, 2)


def test_zero_variance_and_too_few_speakers_are_explicit():
    same = paired_test([0.0, 0.0, 0.0, 0.0])
    assert (same.mean, same.low, same.high, same.p_value, same.equal) == (0.0, 0.0, 0.0, 1.0, 4)
    shifted = paired_test([0.1, 0.1, 0.1])
    assert (shifted.mean, shifted.low, shifted.high, shifted.p_value, shifted.better) == (0.1, 0.1, 0.1, 0.0, 3)
    one = paired_test([0.2, math.nan])
    assert one.n == 1 and one.mean == 0.2 and math.isnan(one.p_value) and math.isnan(one.low)
    assert paired_test([]).n == 0 and math.isnan(paired_test([]).mean)


def test_paired_tests_in_a_batch_equal_one_at_a_time():
    rng = np.random.default_rng(1)
    samples = [rng.normal(0.02, 0.05, size=n) for n in (5, 8, 5, 1, 0, 8)] + [np.zeros(5)]
    batch = paired_tests(samples)
    assert [t.n for t in batch] == [5, 8, 5, 1, 0, 8, 5]
    for sample, t in zip(samples, batch, strict=True):
        alone = paired_test(sample)
        assert t.n == alone.n and t.better == alone.better and t.worse == alone.worse
        if t.n >= 2:
            assert (t.mean, t.low, t.high) == pytest.approx((alone.mean, alone.low, alone.high), rel=1e-12)
            assert t.p_value == pytest.approx(stats.ttest_1samp(sample, 0.0).pvalue if sample.any() else 1.0)


def test_holm_matches_a_hand_computed_example():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> running max 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02], rel=1e-12)
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    out = holm([0.01, math.nan, 0.02])  # NaN stays NaN and is not counted: m = 2
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)
    assert holm([0.02, 0.02]) == pytest.approx([0.04, 0.04])  # ties get the same value
    assert holm([]).size == 0
