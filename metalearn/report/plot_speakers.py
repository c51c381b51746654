"""The per-speaker figure of a run's report: accuracy per speaker x method at one k, as a heat map.

Drawn from per-speaker rows (no file reading here); Matplotlib is imported inside the functions.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from metalearn.report.plots import pyplot, save_figure, wrap_label
from metalearn.report.summary import METRIC_LABELS
from metalearn.util.errors import MetalearnError

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _default_k(ks: Sequence[int]) -> int:
    """The median k present (the lower one of the two middle values)."""
    ks = sorted(set(ks))
    return ks[(len(ks) - 1) // 2]


def _speaker_rows(per_speaker_rows: Sequence[dict], k: int | None, protocol: str | None) -> tuple[str, int, list]:
    """(protocol, k, rows at that k): protocol defaults to the one with the most rows, k to the median k."""
    if not per_speaker_rows:
        raise MetalearnError("per-speaker rows: none to plot")
    if protocol is None:
        names = sorted({r["protocol"] for r in per_speaker_rows})
        protocol = max(names, key=lambda p: sum(r["protocol"] == p for r in per_speaker_rows))
    rows = [r for r in per_speaker_rows if r["protocol"] == protocol]
    ks = sorted({int(r["k"]) for r in rows})
    k = (_default_k(ks) if ks else 0) if k is None else int(k)
    chosen = [r for r in rows if int(r["k"]) == k]
    if not chosen:
        raise MetalearnError(f"per-speaker rows: no k = {k} for protocol {protocol!r} (k present: {ks})")
    return protocol, k, chosen


def per_speaker_figure(per_speaker_rows: Sequence[dict], k: int | None = None, protocol: str | None = None,
                       metric: str = "accuracy") -> Figure:
    """The heat map of :func:`plot_per_speaker` (returned, not saved)."""
    plt = pyplot()
    protocol, k, rows = _speaker_rows(per_speaker_rows, k, protocol)
    speakers = sorted({str(r["speaker"]) for r in rows})
    methods = sorted({(r["pretune"], r["algorithm"]) for r in rows})
    grid = np.full((len(speakers), len(methods)), np.nan)
    for r in rows:
        grid[speakers.index(str(r["speaker"])), methods.index((r["pretune"], r["algorithm"]))] = \
            100 * float(r[f"{metric}_mean"])
    size = (max(6.0, 3.0 + 0.5 * len(methods)), 2.6 + 0.3 * len(speakers))
    fig, ax = plt.subplots(figsize=size, layout="constrained")
    lo, hi = (float(np.nanmin(grid)), float(np.nanmax(grid))) if np.isfinite(grid).any() else (0.0, 100.0)
    image = ax.imshow(grid, cmap="viridis", aspect="auto", vmin=lo, vmax=max(hi, lo + 1e-9))
    for (i, j), v in np.ndenumerate(grid):
        if np.isfinite(v):
            dark = (v - lo) / max(hi - lo, 1e-9) < 0.55  # viridis is dark at the low end
            ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7, color="white" if dark else "black")
    ax.set_xticks(range(len(methods)), [a for _, a in methods], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(speakers)), speakers, fontsize=8)
    ax.set_ylabel("speaker")
    _pretune_groups(ax, [p for p, _ in methods])
    label = METRIC_LABELS.get(metric, metric)
    fig.colorbar(image, ax=ax, label=f"{label} (%)", fraction=0.04, pad=0.01)
    fig.suptitle(f"{label} per speaker, {protocol} protocol, k = {k} (mean over repetitions)", fontsize=10)
    return fig


def _pretune_groups(ax, pretunes: Sequence[str]) -> None:
    """Name each run of columns sharing a pretune variant on a top axis; white lines between the runs."""
    starts = [j for j, p in enumerate(pretunes) if j == 0 or p != pretunes[j - 1]]
    ends = [*starts[1:], len(pretunes)]
    for j in starts[1:]:
        ax.axvline(j - 0.5, color="white", lw=2.5)
    top = ax.secondary_xaxis("top")
    top.set_xticks([(a + b - 1) / 2 for a, b in zip(starts, ends, strict=True)],
                   [wrap_label(pretunes[a], max(8, 7 * (b - a))) for a, b in zip(starts, ends, strict=True)],
                   fontsize=8)
    top.tick_params(length=0)


def plot_per_speaker(per_speaker_rows: Sequence[dict], path: str | os.PathLike, k: int | None = None,
                     protocol: str | None = None, metric: str = "accuracy") -> Path:
    """PNG heat map of ``metric`` per speaker (rows) x pretune / algorithm (columns) at one k, annotated.

    ``k`` defaults to the median k present; ``protocol`` to the one with the most rows. Returns ``path``.
    """
    return save_figure(per_speaker_figure(per_speaker_rows, k, protocol, metric), path)
