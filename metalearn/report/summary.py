"""Summaries of trial records: one row per (pretune, algorithm, protocol, k) with each metric's mean and interval."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from metalearn.util.metrics import mean_ci95

SUMMARY_FIELDS = ("pretune", "algorithm", "protocol", "k", "n_trials", "accuracy_mean", "accuracy_ci95",
                  "macro_f1_mean", "macro_f1_ci95", "uar_mean", "uar_ci95", "weighted_f1_mean", "weighted_f1_ci95")


def summarize(records: Iterable[dict]) -> list[dict]:
    """Mean and 95% t-interval half-width of each metric per (pretune, algorithm, protocol, k)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["pretune"], r["algorithm"], r["protocol"], int(r["k"]))].append(r)
    rows = []
    for (pretune, algorithm, protocol, k), rs in sorted(groups.items()):
        row = {"pretune": pretune, "algorithm": algorithm, "protocol": protocol, "k": k, "n_trials": len(rs)}
        for m in ("accuracy", "macro_f1", "uar", "weighted_f1"):
            mean, half, _ = mean_ci95([r[m] for r in rs])
            row[f"{m}_mean"], row[f"{m}_ci95"] = mean, half
        rows.append(row)
    return rows
