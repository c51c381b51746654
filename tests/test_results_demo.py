"""The committed results/demo, recomputed from its trials.csv alone with plain NumPy and SciPy (none of the
project's report code): every summary.csv and comparisons.csv row agrees to 1e-9.

Summary: per speaker the mean of its trials, then the mean over speakers and the half-width of the t-interval
(df = speakers - 1). Comparisons: trials pair on (episode_id, seed), and on meta_seed too when both cells hold the
same meta seeds (else each side is averaged per episode first); per speaker the mean paired difference; then the
mean over speakers, its t-interval and the paired t-test; Holm over all rows of one metric.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

DEMO = Path(__file__).resolve().parent.parent / "results" / "demo"
METRICS = ("accuracy", "macro_f1", "uar", "weighted_f1")

pytestmark = pytest.mark.skipif(not (DEMO / "trials.csv").is_file(), reason="results/demo is not committed here")


def _read(name: str) -> list[dict]:
    with open(DEMO / name, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _cells() -> dict[tuple, list[dict]]:
    cells = defaultdict(list)
    for r in _read("trials.csv"):
        cells[(r["pretune"], r["algorithm"], r["protocol"], int(r["k"]))].append(r)
    return cells


def _interval(values: np.ndarray) -> tuple[float, float]:
    n = len(values)
    half = stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / np.sqrt(n) if n > 1 else float("nan")
    return float(values.mean()), float(half)


def test_summary_rows_recompute_from_trials() -> None:
    cells = _cells()
    rows = _read("summary.csv")
    assert rows and len(rows) == len(cells)
    for row in rows:
        records = cells[(row["pretune"], row["algorithm"], row["protocol"], int(row["k"]))]
        by_speaker = defaultdict(list)
        for r in records:
            by_speaker[r["speaker"]].append(r)
        assert int(row["n_trials"]) == len(records) and int(row["n_speakers"]) == len(by_speaker)
        for m in METRICS:
            means = np.array([np.mean([float(r[m]) for r in rs]) for _, rs in sorted(by_speaker.items())])
            mean, half = _interval(means)
            assert float(row[f"{m}_mean"]) == pytest.approx(mean, abs=1e-9)
            if len(means) > 1 and means.std() > 0:
                assert float(row[f"{m}_ci95"]) == pytest.approx(half, abs=1e-9)


def _paired(method: list[dict], reference: list[dict], metric: str) -> tuple[np.ndarray, int]:
    """Per-speaker mean paired differences [S] and the number of paired episodes."""
    same_seeds = {r["meta_seed"] for r in method} == {r["meta_seed"] for r in reference}

    def index(records: list[dict]) -> dict[tuple, tuple[str, float]]:
        grouped = defaultdict(list)
        for r in records:
            key = (r["episode_id"], r["seed"], r["meta_seed"]) if same_seeds else (r["episode_id"], r["seed"])
            grouped[key].append(r)
        return {key: (rs[0]["speaker"], float(np.mean([float(r[metric]) for r in rs]))) for key, rs in grouped.items()}

    a, b = index(method), index(reference)
    common = sorted(a.keys() & b.keys())
    diffs = defaultdict(list)
    for key in common:
        diffs[a[key][0]].append(a[key][1] - b[key][1])
    return np.array([np.mean(v) for _, v in sorted(diffs.items())]), len(common)


def test_comparison_rows_recompute_from_trials() -> None:
    cells = _cells()
    rows = _read("comparisons.csv")
    assert rows
    for metric in METRICS:
        mine = [r for r in rows if r["metric"] == metric]
        p_values = []
        for row in mine:
            k = int(row["k"])
            method = cells[(row["pretune"], row["algorithm"], row["protocol"], k)]
            reference = cells[(row["reference_pretune"], row["reference"], row["protocol"], k)]
            diffs, pairs = _paired(method, reference, metric)
            assert int(row["n_speakers"]) == len(diffs) and int(row["n_trials"]) == pairs
            mean, half = _interval(diffs)
            assert float(row["diff_mean"]) == pytest.approx(mean, abs=1e-9)
            if diffs.std() > 0:
                assert float(row["diff_ci_low"]) == pytest.approx(mean - half, abs=1e-9)
                assert float(row["diff_ci_high"]) == pytest.approx(mean + half, abs=1e-9)
                p = stats.ttest_1samp(diffs, 0.0).pvalue
                assert float(row["p_value"]) == pytest.approx(p, abs=1e-9)
            tol = 1e-12  # differences that cancel can round to +-1e-17: equal (report.stats.EQUAL)
            assert (int(row["better"]), int(row["worse"])) == (int((diffs > tol).sum()), int((diffs < -tol).sum()))
            p_values.append(float(row["p_value"]))
        # Holm: sorted p times (m - rank), running maximum, capped at 1
        order, m = np.argsort(p_values, kind="stable"), len(p_values)
        adjusted = np.minimum(1.0, np.maximum.accumulate(np.array(p_values)[order] * (m - np.arange(m))))
        expected = np.empty(len(p_values))
        expected[order] = adjusted
        for row, p in zip(mine, expected, strict=True):
            assert float(row["p_holm"]) == pytest.approx(p, abs=1e-9)
