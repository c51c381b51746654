"""Figures for a run's report, drawn from summary rows (no file reading here).

- :func:`metric_figure` / :func:`plot_metric_vs_k`: a metric against k for one protocol (the axis says
  "k (support size)" in the binary protocol, "k (shots per class)" in N-way); one panel per pretune variant
  (``none`` first, then by the number of corpora), one line per algorithm with its 95% t-interval band over
  speakers, and the ``majority`` algorithm's curve as the baseline (the chance level 1/ways when no majority
  rows exist).

Colours, markers, the variant order and the k label are :mod:`metalearn.report.figures_style`'s (one colour per
algorithm in every figure). The paired differences are :mod:`metalearn.report.figures_comparison`, the
variants-on-one-axis figure and the variant x k heat map :mod:`metalearn.report.figures_variants`, the
per-speaker heat map :mod:`metalearn.report.plot_speakers`.

Matplotlib is imported inside the functions (Agg backend), so importing this module stays cheap.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from metalearn.report.figures_style import BASELINE, algorithm_styles, k_label, ordered_variants
from metalearn.report.summary import METRIC_LABELS
from metalearn.util.errors import MetalearnError
from metalearn.util.fileio import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure, SubFigure

BASELINE_STYLE = {"color": "0.45", "ls": "--", "lw": 1.0, "zorder": 0}
PANELS_PER_ROW = 4
__all__ = ["BASELINE", "algorithm_styles", "metric_figure", "plot_metric_vs_k", "save_figure"]


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def one_protocol(rows: Sequence[dict], protocol: str | None) -> tuple[str, list[dict]]:
    protocols = sorted({r["protocol"] for r in rows})
    if protocol is None:
        if len(protocols) != 1:
            raise MetalearnError(f"summary rows hold protocols {protocols}; expected exactly one (pass protocol=)")
        protocol = protocols[0]
    chosen = [r for r in rows if r["protocol"] == protocol]
    if not chosen:
        raise MetalearnError(f"protocol {protocol!r}: no summary rows (present: {protocols})")
    return protocol, chosen


def k_axis(ax, ks: Sequence[int]) -> None:
    """Log k axis (symlog with linthresh 1 when k = 0 is present), ticks at the k values, plain integers."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    if 0 in ks:
        ax.set_xscale("symlog", linthresh=1, linscale=0.5)
    else:
        ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(sorted(ks)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    scale = ax.xaxis.get_transform()  # pad both ends by 7% of the span, in the scale's own coordinates
    lo, hi = scale.transform([min(ks), max(ks)])
    pad = 0.07 * (hi - lo) if hi > lo else 0.5
    ax.set_xlim(*scale.inverted().transform([lo - pad, hi + pad]))


def include_x(ax, xs: Sequence[float], pad: float = 0.04) -> None:
    """Widen the x limits (never narrow them) so every position in ``xs`` lies inside, ``pad`` of the span
    clear of the edge in the axis's own scale (points dodged around a k value can lie beyond the k axis's pad)."""
    if not len(xs):
        return
    scale = ax.xaxis.get_transform()
    (lo, hi), (x_lo, x_hi) = scale.transform(ax.get_xlim()), scale.transform([min(xs), max(xs)])
    margin = pad * (hi - lo)
    ax.set_xlim(*scale.inverted().transform([min(lo, x_lo - margin), max(hi, x_hi + margin)]))


def wrap_label(name: str, width: int = 30) -> str:
    """Break a long variant name (corpora joined by "+") into lines of about ``width`` characters."""
    lines, line = [], ""
    for part in name.replace("+", "+\0").split("\0"):
        if line and len(line) + len(part) > width:
            lines.append(line)
            line = ""
        line += part
    return "\n".join([*lines, line])


def span(values: Iterable[int]) -> str:
    values = list(values)
    return f"{min(values)}" if min(values) == max(values) else f"{min(values)}-{max(values)}"


def n_text(rows: Sequence[dict]) -> str:
    return f"{sum(int(r['n_trials']) for r in rows)} trials, n = {span(int(r['n_speakers']) for r in rows)} " \
           "speakers per point"


def panel_shape(n: int) -> tuple[int, int]:
    """(rows, columns) for ``n`` panels: up to 4 a row, balanced (5 panels as 3 + 2, not 4 + 1)."""
    nrows = math.ceil(n / PANELS_PER_ROW)
    return nrows, math.ceil(n / nrows)


def panel_size(nrows: int, ncols: int) -> tuple[float, float]:
    """Figure size (inches) for a grid of panels."""
    return max(6.4, 1.0 + 3.4 * ncols), 1.6 + 2.9 * nrows


def panels(names: Sequence[str], ks: Sequence[int], ylabel: str, xlabel: str = "k (shots per class)",
            container: Figure | SubFigure | None = None):
    """(figure, axes) with one panel per name (shared y, up to 4 per row), titled, k axis set, spares hidden;
    drawn into ``container`` (a figure or subfigure) when given."""
    nrows, ncols = panel_shape(len(names))
    if container is None:
        container = pyplot().figure(figsize=panel_size(nrows, ncols), layout="constrained")
    axes = container.subplots(nrows, ncols, sharey=True, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= len(names):
            ax.set_visible(False)
            continue
        ax.set_title(wrap_label(names[i]), fontsize=10)
        k_axis(ax, ks)
        ax.tick_params(labelleft=i % ncols == 0, labelbottom=True)
        if i % ncols == 0:
            ax.set_ylabel(ylabel)
        if i + ncols >= len(names):  # nothing drawn below this panel
            ax.set_xlabel(xlabel)
    return container, list(axes.flat)[: len(names)]


def baseline_rows(rows: Sequence[dict], pretune: str) -> list[dict]:
    """The majority rows of ``pretune``, else of the first variant that has them (they use no backbone)."""
    rows = [r for r in rows if r["algorithm"] == BASELINE]
    own = [r for r in rows if r["pretune"] == pretune]
    return own or [r for r in rows if r["pretune"] == min(r["pretune"] for r in rows)]


def draw_baseline(ax, rows: Sequence[dict], metric: str) -> None:
    pts = sorted((int(r["k"]), 100 * float(r[f"{metric}_mean"])) for r in rows)
    if len(pts) == 1:
        ax.axhline(pts[0][1], **BASELINE_STYLE)
    else:
        ax.plot(*zip(*pts, strict=True), **BASELINE_STYLE)


def metric_figure(summary_rows: Sequence[dict], metric: str, title: str | None = None,
                  chance: float | None = None, protocol: str | None = None) -> Figure:
    """The figure of :func:`plot_metric_vs_k` (returned, not saved)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    styles = algorithm_styles(r["algorithm"] for r in summary_rows)
    protocol, rows = one_protocol(summary_rows, protocol)
    has_baseline = any(r["algorithm"] == BASELINE for r in rows)
    methods = [r for r in rows if r["algorithm"] != BASELINE]
    pretunes = ordered_variants(r["pretune"] for r in rows)
    label = METRIC_LABELS.get(metric, metric)
    fig, axes = panels(pretunes, sorted({int(r["k"]) for r in rows}), f"{label} (%)", k_label(protocol))
    for ax, pretune in zip(axes, pretunes, strict=True):
        _draw_panel(ax, [r for r in methods if r["pretune"] == pretune], metric, styles,
                    None if has_baseline else chance)
        if has_baseline:
            draw_baseline(ax, baseline_rows(rows, pretune), metric)
    present = sorted({r["algorithm"] for r in methods})
    handles = [Line2D([], [], color=styles[a][0], marker=styles[a][1], label=a) for a in present]
    handles.append(Patch(color="0.5", alpha=0.25, label="95% CI"))
    if has_baseline:
        handles.append(Line2D([], [], color="0.45", ls="--", label="majority baseline"))
    elif chance is not None:
        handles.append(Line2D([], [], color="0.45", ls="--", label=f"chance ({100 * chance:.1f}%)"))
    fig.legend(handles=handles, loc="outside lower center", ncol=legend_columns(handles, fig.get_figwidth()),
               frameon=False)
    fig.suptitle(title or f"{label} vs k, {protocol} protocol\n({n_text(rows)}; mean ± 95% CI over speakers)",
                 fontsize=11)
    return fig


def legend_columns(handles: Sequence, width_in: float) -> int:
    """Legend columns: one row when the entries fit the figure's width (~0.6 in + 0.075 in a character)."""
    total = sum(0.6 + 0.075 * len(h.get_label()) for h in handles)
    rows = math.ceil(total / max(width_in - 0.4, 1.0))
    return math.ceil(len(handles) / rows)


def _draw_panel(ax, rows: Sequence[dict], metric: str, styles: dict, chance: float | None) -> None:
    for algorithm in sorted({r["algorithm"] for r in rows}):
        pts = sorted((int(r["k"]), 100 * float(r[f"{metric}_mean"]), 100 * float(r[f"{metric}_ci95"]))
                     for r in rows if r["algorithm"] == algorithm)
        k, mean, half = (list(v) for v in zip(*pts, strict=True))
        half = [0.0 if math.isnan(h) else h for h in half]
        color, marker = styles[algorithm]
        if len(k) == 1:  # a lone point (zero-shot at k = 0) has no band to draw: an error bar instead
            ax.errorbar(k, mean, yerr=half, color=color, marker=marker, ms=5, lw=1.6, capsize=3, label=algorithm)
            continue
        ax.fill_between(k, [m - h for m, h in zip(mean, half, strict=True)],
                        [m + h for m, h in zip(mean, half, strict=True)], color=color, alpha=0.18, lw=0)
        ax.plot(k, mean, color=color, marker=marker, ms=5, lw=1.6, label=algorithm)
    if chance is not None:
        ax.axhline(100 * chance, **BASELINE_STYLE)
    ax.grid(True, alpha=0.3)


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, metadata={"Software": None})
    pyplot().close(fig)
    return path


def plot_metric_vs_k(summary_rows: Sequence[dict], metric: str, path: str | os.PathLike, title: str | None = None,
                     chance: float | None = None, protocol: str | None = None) -> Path:
    """PNG of ``metric`` (mean ± 95% CI, percent) against k for one protocol; returns ``path``.

    One panel per pretune variant (shared y, up to 4 per row), one line per algorithm in a colour fixed by
    its name, a dashed baseline: the ``majority`` algorithm's rows when present ("majority baseline"), else
    a chance line at ``chance`` (a fraction, e.g. 1/ways); k on a log axis (symlog when k = 0 is present).
    ``protocol`` picks one when the rows hold several.
    """
    return save_figure(metric_figure(summary_rows, metric, title, chance, protocol), path)
