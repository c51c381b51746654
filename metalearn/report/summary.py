"""Summaries of trial records: one row per (pretune, algorithm, protocol, k), the speaker as the independent unit.

Within a cell, each metric is first averaged within a speaker (over repetitions, binary targets, seeds and
meta-training seeds alike), exactly (``math.fsum``), so the order of the records never changes a bit; then
the row holds the mean of the per-speaker means and the half-width of the 95% t-interval over speakers
(df = n_speakers - 1; NaN with one speaker).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from metalearn.report.stats import exact_mean
from metalearn.util.intervals import t_interval

METRICS = ("accuracy", "macro_f1", "uar", "weighted_f1")
METRIC_LABELS = {"accuracy": "Accuracy", "macro_f1": "Macro-F1", "uar": "UAR", "weighted_f1": "Weighted-F1"}
SUMMARY_FIELDS = ("pretune", "algorithm", "protocol", "k", "n_trials", "n_speakers", "accuracy_mean",
                  "accuracy_ci95", "macro_f1_mean", "macro_f1_ci95", "uar_mean", "uar_ci95", "weighted_f1_mean",
                  "weighted_f1_ci95")


def cell_key(r: dict) -> tuple[str, str, str, int]:
    """The summary cell of a record: (pretune, algorithm, protocol, k)."""
    return r["pretune"], r["algorithm"], r["protocol"], int(r["k"])


def speaker_means(records: Iterable[dict], metric: str) -> dict[str, float]:
    """{speaker: exact mean of ``metric`` over the speaker's records} (NaN values dropped), speakers sorted."""
    values: dict[str, list[float]] = defaultdict(list)
    for r in records:
        values[str(r["speaker"])].append(float(r[metric]))
    return {s: exact_mean(values[s]) for s in sorted(values)}


def summarize(records: Iterable[dict]) -> list[dict]:
    """Per (pretune, algorithm, protocol, k): n_trials, n_speakers, and each metric's mean over per-speaker
    means with the 95% t-interval half-width over speakers (rows sorted by the cell key)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[cell_key(r)].append(r)
    rows = []
    for (pretune, algorithm, protocol, k), rs in sorted(groups.items()):
        row = {"pretune": pretune, "algorithm": algorithm, "protocol": protocol, "k": k, "n_trials": len(rs),
               "n_speakers": len({str(r["speaker"]) for r in rs})}
        for m in METRICS:
            mean, half, _ = t_interval(list(speaker_means(rs, m).values()))
            row[f"{m}_mean"], row[f"{m}_ci95"] = mean, half
        rows.append(row)
    return rows
