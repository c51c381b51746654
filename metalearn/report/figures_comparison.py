"""The paired-difference figure of a run's report (``comparison_vs_k.png``), drawn from comparison rows.

Paired differences to the reference against k, each with its 95% interval over speakers; one panel per pretune
variant, a zero line. The scale is kept for the many: an algorithm whose differences are far larger than the
others' (:func:`outliers`, e.g. full-backbone fine-tuning 40 points below a linear head) is drawn in a second
row of panels with its own y axis instead of stretching the shared one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from metalearn.report.figures_style import BASELINE, algorithm_styles, k_label, ordered_variants
from metalearn.report.plots import (
    include_x,
    legend_columns,
    one_protocol,
    panel_shape,
    panel_size,
    panels,
    pyplot,
    save_figure,
    span,
)
from metalearn.report.summary import METRIC_LABELS

if TYPE_CHECKING:
    from matplotlib.figure import Figure, SubFigure

OUTLIER_RATIO = 3.0    # an algorithm is an outlier when its largest |difference| is this many times the rest's
OUTLIER_MIN = 0.10     # and at least this much larger (a fraction: 10 points)


def comparison_rows(rows: Sequence[dict], metric: str, protocol: str | None) -> tuple[str, list[dict], str]:
    """(protocol, rows to draw, what they are compared with): algorithm-vs-reference rows, else variant rows."""
    protocol, rows = one_protocol([r for r in rows if r["metric"] == metric], protocol)
    versus_algorithm = [r for r in rows if r["reference_pretune"] == r["pretune"]]
    if versus_algorithm:
        methods = [r for r in versus_algorithm if r["algorithm"] != BASELINE] or versus_algorithm
        return protocol, methods, f"{methods[0]['reference']} (same variant)"
    return protocol, rows, f"{rows[0]['reference_pretune']} variant (same algorithm)"


def outliers(rows: Sequence[dict]) -> list[str]:
    """The algorithms drawn on their own scale: peeled off from the largest while an algorithm's largest
    |diff_mean| is over :data:`OUTLIER_RATIO` times, and :data:`OUTLIER_MIN` above, the next one's; at least
    two algorithms always stay on the shared axis."""
    extent: dict[str, float] = {}
    for r in rows:
        value = abs(float(r["diff_mean"]))
        if np.isfinite(value):
            extent[r["algorithm"]] = max(extent.get(r["algorithm"], 0.0), value)
    ranked = sorted(extent, key=lambda a: (-extent[a], a))
    out: list[str] = []
    while len(ranked) - len(out) > 2:
        top, nxt = extent[ranked[len(out)]], extent[ranked[len(out) + 1]]
        if top <= OUTLIER_RATIO * nxt or top - nxt < OUTLIER_MIN:
            break
        out.append(ranked[len(out)])
    return sorted(out)


def _draw_differences(ax, rows: Sequence[dict], algorithms: Sequence[str], styles: dict) -> None:
    """One algorithm's differences as points with 95% error bars, side by side on the log k axis; a zero line."""
    ax.axhline(0.0, color="0.3", lw=1.0, zorder=0)
    xs: list[float] = []
    for j, algorithm in enumerate(algorithms):
        pts = sorted((int(r["k"]), *(100 * float(r[c]) for c in ("diff_mean", "diff_ci_low", "diff_ci_high")))
                     for r in rows if r["algorithm"] == algorithm)
        if not pts:
            continue
        k, mean, low, high = (np.asarray(v, dtype=np.float64) for v in zip(*pts, strict=True))
        shift = 1.07 ** (j - (len(algorithms) - 1) / 2)
        bars = np.nan_to_num(np.stack([mean - low, high - mean]))
        drawn = ax.errorbar(k * shift, mean, yerr=bars, color=styles[algorithm][0], marker=styles[algorithm][1],
                            ms=5, lw=1.4, capsize=3, label=algorithm)
        drawn.lines[0].set_label(algorithm)  # the data line carries the name too (tools and tests read it)
        xs += list(k * shift)
    include_x(ax, xs)
    ax.grid(True, alpha=0.3)


@dataclass(frozen=True)
class _Frame:
    """What every panel of the figure shares: the k values on the x axis, the axis labels, the algorithms'
    (colour, marker) styles."""

    ks: Sequence[int]
    ylabel: str
    xlabel: str
    styles: dict


def _group(container: Figure | SubFigure, rows: Sequence[dict], algorithms: Sequence[str], frame: _Frame,
           note: str = "") -> None:
    """One panel per pretune variant holding ``algorithms``' differences (shared y inside the group)."""
    chosen = [r for r in rows if r["algorithm"] in algorithms]
    pretunes = ordered_variants(r["pretune"] for r in chosen)
    _, axes = panels(pretunes, frame.ks, frame.ylabel, frame.xlabel, container=container)
    for ax, pretune in zip(axes, pretunes, strict=True):
        _draw_differences(ax, [r for r in chosen if r["pretune"] == pretune], algorithms, frame.styles)
        if note:
            ax.set_title(f"{ax.get_title()}\n{note}", fontsize=9)


def comparison_figure(comparison_rows_: Sequence[dict], metric: str = "accuracy", protocol: str | None = None,
                      title: str | None = None) -> Figure:
    """The figure of :func:`plot_comparisons` (returned, not saved)."""
    from matplotlib.lines import Line2D

    protocol, rows, versus = comparison_rows(comparison_rows_, metric, protocol)
    algorithms = sorted({r["algorithm"] for r in rows})
    styles = algorithm_styles(algorithms)
    apart = outliers(rows)
    many = [a for a in algorithms if a not in apart]
    label = METRIC_LABELS.get(metric, metric)
    frame = _Frame(sorted({int(r["k"]) for r in rows}), f"Δ {label} (points)", k_label(protocol), styles)
    shapes = [panel_shape(len({r["pretune"] for r in rows if r["algorithm"] in group})) for group in (many, apart)
              if group]
    width = max(panel_size(*s)[0] for s in shapes)
    height = sum(panel_size(*s)[1] - 1.0 for s in shapes) + 1.0
    fig = pyplot().figure(figsize=(width, height), layout="constrained")
    if apart:
        top, bottom = fig.subfigures(2, 1, height_ratios=[panel_size(*s)[1] for s in shapes])
        _group(top, rows, many, frame)
        _group(bottom, rows, apart, frame, note=f"{', '.join(apart)}: own scale")
    else:
        _group(fig, rows, many, frame)
    handles = [Line2D([], [], color=styles[a][0], marker=styles[a][1], label=a) for a in algorithms]
    fig.legend(handles=handles, loc="outside lower center", ncol=legend_columns(handles, fig.get_figwidth()),
               frameon=False)
    n = f"n = {span(int(r['n_speakers']) for r in rows)} speakers"
    scale = f"; {', '.join(apart)} on its own scale (bottom row)" if apart else ""
    fig.suptitle(title or f"{label}: difference to {versus} vs k, {protocol} protocol\n"
                 f"(paired by episode; mean over speakers ± 95% CI, {n}{scale})", fontsize=11)
    return fig


def plot_comparisons(comparison_rows_: Sequence[dict], path: str | os.PathLike, metric: str = "accuracy",
                     protocol: str | None = None) -> Path:
    """PNG of the paired differences (points, mean ± 95% CI over speakers) of ``metric`` against k.

    Draws the algorithm-vs-reference rows of :func:`metalearn.report.compare.comparisons` (the ``majority``
    baseline left out when other algorithms exist), or the variant-vs-none rows when there are none; one
    panel per pretune variant, one colour per algorithm, a line at 0; :func:`outliers` in a row of their own.
    Returns ``path``.
    """
    return save_figure(comparison_figure(comparison_rows_, metric, protocol), path)
