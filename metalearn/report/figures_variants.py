"""Paper A's figures: the pretune variants against each other (drawn when a run has several variants).

- :func:`variants_figure` / :func:`plot_variants`: a metric against k, the variants as lines on ONE axis per
  algorithm (``none`` thick and black with its 95% band; the others coloured by the number of corpora they were
  pre-finetuned on, ordered ``none``, ``pft-a``, ..., ``pft-a+b+c+d``), the ``majority`` baseline dashed.
- :func:`difference_heatmap` / :func:`plot_difference_heatmap`: variant x k maps (one per algorithm) of the
  paired difference to ``none`` (:func:`metalearn.report.compare.comparisons`, rows whose reference_pretune
  is ``none`` and whose algorithm is the same), each cell "+3.1 [+0.2, +6.0]" in points, hatched and framed
  where the 95% interval over speakers excludes 0.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from metalearn.report.figures_style import BASELINE, corpora_count, k_label, ordered_variants
from metalearn.report.plots import (
    baseline_rows,
    draw_baseline,
    k_axis,
    n_text,
    one_protocol,
    pyplot,
    save_figure,
    span,
    wrap_label,
)
from metalearn.report.summary import METRIC_LABELS
from metalearn.util.errors import MetalearnError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

BASE = "none"
LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P")


def variant_styles(variants: Sequence[str]) -> dict[str, dict]:
    """Line style per variant: ``none`` black and thick; the others a viridis shade by their number of corpora
    (the most: yellow-green), told apart within a shade by marker and dash."""
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    most = max([corpora_count(v) for v in variants] + [1])
    styles, seen = {}, {}
    for v in ordered_variants(variants):
        n = corpora_count(v)
        if v == BASE:
            styles[v] = {"color": "black", "lw": 2.6, "marker": "o", "ls": "-", "zorder": 5}
            continue
        i = seen[n] = seen.get(n, -1) + 1
        styles[v] = {"color": cmap(0.08 + 0.84 * (n - 1) / max(most - 1, 1)), "lw": 1.4,
                     "marker": MARKERS[i % len(MARKERS)], "ls": LINESTYLES[i % len(LINESTYLES)], "zorder": 3}
    return styles


def variants_figure(summary_rows: Sequence[dict], metric: str = "accuracy", protocol: str | None = None) -> Figure:
    """The figure of :func:`plot_variants` (returned, not saved)."""
    protocol, rows = one_protocol(summary_rows, protocol)
    methods = sorted({r["algorithm"] for r in rows if r["algorithm"] != BASELINE})
    if not methods:
        raise MetalearnError(f"protocol {protocol!r}: no algorithm but {BASELINE} to draw per variant")
    variants = ordered_variants(r["pretune"] for r in rows if r["algorithm"] in methods)
    styles = variant_styles(variants)
    ks = sorted({int(r["k"]) for r in rows})
    label = METRIC_LABELS.get(metric, metric)
    ncols = min(len(methods), 2)
    nrows = math.ceil(len(methods) / ncols)
    fig = pyplot().figure(figsize=(1.5 + 6.5 * ncols, 1.8 + 4.6 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    for i, ax in enumerate(axes.flat):
        if i >= len(methods):
            ax.set_visible(False)
            continue
        _variant_lines(ax, [r for r in rows if r["algorithm"] == methods[i]], variants, styles, metric)
        if any(r["algorithm"] == BASELINE for r in rows):
            draw_baseline(ax, baseline_rows(rows, BASE), metric)
        k_axis(ax, ks)
        ax.set_title(methods[i], fontsize=11)
        ax.set_xlabel(k_label(protocol))
        ax.set_ylabel(f"{label} (%)")
        ax.grid(True, alpha=0.3)
    fig.legend(handles=_variant_handles(variants, styles, any(r["algorithm"] == BASELINE for r in rows)),
               loc="outside right center", frameon=False, fontsize=8, title="pretune variant", title_fontsize=9)
    drawn = [r for r in rows if r["algorithm"] in methods]
    fig.suptitle(f"{label} vs k per pretune variant, {protocol} protocol\n({n_text(drawn)}; mean over speakers, "
                 f"95% CI band on {BASE})", fontsize=11)
    return fig


def _variant_lines(ax, rows: Sequence[dict], variants: Sequence[str], styles: dict, metric: str) -> None:
    for v in variants:
        pts = sorted((int(r["k"]), 100 * float(r[f"{metric}_mean"]), 100 * float(r[f"{metric}_ci95"]))
                     for r in rows if r["pretune"] == v)
        if not pts:
            continue
        k, mean, half = (np.asarray(x, dtype=np.float64) for x in zip(*pts, strict=True))
        if v == BASE and len(k) > 1:
            half = np.nan_to_num(half)
            ax.fill_between(k, mean - half, mean + half, color="black", alpha=0.12, lw=0)
        ax.plot(k, mean, ms=4.5, label=v, **styles[v])


def _variant_handles(variants: Sequence[str], styles: dict, baseline: bool) -> list:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], label=wrap_label(v, 34), **{k: s for k, s in styles[v].items() if k != "zorder"})
               for v in variants]
    if baseline:
        handles.append(Line2D([], [], color="0.45", ls="--", label="majority baseline"))
    return handles


def plot_variants(summary_rows: Sequence[dict], path: str | os.PathLike, metric: str = "accuracy",
                  protocol: str | None = None) -> Path:
    """PNG of ``metric`` against k with every pretune variant as a line on one axis per algorithm."""
    return save_figure(variants_figure(summary_rows, metric, protocol), path)


def _difference_grid(rows: Sequence[dict], variants: Sequence[str], ks: Sequence[int]) -> np.ndarray:
    """[V, K, 3] (mean, low, high) in points, NaN where no comparison exists."""
    grid = np.full((len(variants), len(ks), 3), np.nan)
    for r in rows:
        grid[variants.index(r["pretune"]), ks.index(int(r["k"]))] = \
            [100 * float(r[c]) for c in ("diff_mean", "diff_ci_low", "diff_ci_high")]
    return grid


def _variant_rows(comparison_rows: Sequence[dict], metric: str, protocol: str | None) -> tuple[str, list[dict]]:
    rows = [r for r in comparison_rows if r["metric"] == metric and r["reference_pretune"] == BASE
            and r["pretune"] != BASE and r["reference"] == r["algorithm"] and r["algorithm"] != BASELINE]
    if not rows:
        raise MetalearnError(f"no variant-vs-{BASE} comparison of {metric!r} to draw")
    return one_protocol(rows, protocol)


HEATMAPS_PER_ROW = 3  # panels per row: a wide grid of algorithms stays readable


def difference_heatmap(comparison_rows: Sequence[dict], metric: str = "accuracy",
                       protocol: str | None = None) -> Figure:
    """The figure of :func:`plot_difference_heatmap` (returned, not saved)."""
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.patches import Patch

    protocol, rows = _variant_rows(comparison_rows, metric, protocol)
    algorithms = sorted({r["algorithm"] for r in rows})
    variants = ordered_variants(r["pretune"] for r in rows)
    ks = sorted({int(r["k"]) for r in rows})
    grids = {a: _difference_grid([r for r in rows if r["algorithm"] == a], variants, ks) for a in algorithms}
    finite = np.concatenate([np.abs(g[..., 0][np.isfinite(g[..., 0])]) for g in grids.values()])
    limit = max(float(finite.max()) if finite.size else 1.0, 1e-6)
    ncols = min(len(algorithms), HEATMAPS_PER_ROW)
    nrows = math.ceil(len(algorithms) / ncols)
    size = ((2.6 + 1.25 * len(ks)) * ncols + 1.2, (1.4 + 0.5 * len(variants)) * nrows + 0.8)
    fig = pyplot().figure(figsize=size, layout="constrained")
    grid_axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    axes = list(grid_axes.flat)[: len(algorithms)]
    for spare in list(grid_axes.flat)[len(algorithms):]:
        spare.set_visible(False)
    norm = TwoSlopeNorm(0.0, -limit, limit)
    for i, (ax, algorithm) in enumerate(zip(axes, algorithms, strict=True)):
        image = _draw_map(ax, grids[algorithm], norm)
        ax.set_xticks(range(len(ks)), [str(k) for k in ks])
        ax.set_xlabel(k_label(protocol))
        ax.set_title(f"{algorithm}: Δ to {BASE}", fontsize=10)
        if i % ncols == 0:
            ax.set_yticks(range(len(variants)), [wrap_label(v, 34) for v in variants], fontsize=8)
    label = METRIC_LABELS.get(metric, metric)
    fig.colorbar(image, ax=list(axes), label=f"Δ {label} (points)", fraction=0.05, pad=0.01)
    fig.legend(handles=[Patch(facecolor="white", edgecolor="black", hatch="//",
                              label="95% CI excludes 0 (hatched, framed)")],
               loc="outside lower center", frameon=False, fontsize=9)
    n = f"n = {span(int(r['n_speakers']) for r in rows)} speakers"
    fig.suptitle(f"{label}: paired difference to {BASE} (same algorithm, same episodes), {protocol} protocol\n"
                 f"cells: mean over speakers [95% CI] in points, {n}", fontsize=11)
    return fig


def _draw_map(ax, grid: np.ndarray, norm):
    """Colour cells by the mean, write "mean [low, high]", hatch and frame cells whose interval excludes 0."""
    from matplotlib.patches import Rectangle

    image = ax.imshow(grid[..., 0], cmap="RdBu", norm=norm, aspect="auto")
    for (i, j), mean in np.ndenumerate(grid[..., 0]):
        if not np.isfinite(mean):
            ax.text(j, i, "–", ha="center", va="center", fontsize=8, color="0.4")
            continue
        low, high = grid[i, j, 1], grid[i, j, 2]
        strong = abs(norm(mean) - 0.5) > 0.33  # dark end of the diverging map
        excludes = bool(np.isfinite(low) and np.isfinite(high) and (low > 0 or high < 0))
        ax.text(j, i, f"{_points(mean)}\n[{_points(low)}, {_points(high)}]", ha="center", va="center", fontsize=7,
                color="white" if strong else "black", fontweight="bold" if excludes else "normal")
        if excludes:
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="//", edgecolor="0.2", lw=0,
                                   alpha=0.3))
            ax.add_patch(Rectangle((j - 0.48, i - 0.47), 0.96, 0.94, fill=False, edgecolor="0.1", lw=1.5))
    return image


def _points(value: float) -> str:
    """Signed points with one decimal; a value that rounds to zero is "0.0" (never "-0.0")."""
    text = f"{value:+.1f}"
    return "0.0" if text in ("+0.0", "-0.0") else text


def plot_difference_heatmap(comparison_rows: Sequence[dict], path: str | os.PathLike, metric: str = "accuracy",
                            protocol: str | None = None) -> Path:
    """PNG of the variant x k map of the paired difference to ``none`` per algorithm; returns ``path``."""
    return save_figure(difference_heatmap(comparison_rows, metric, protocol), path)
