"""The picture of one episode: a 2-D PCA of its standardised support and query features.

Support clips are filled circles, queries open circles (both coloured by their TRUE emotion), class prototypes
(support means) stars, and the queries one algorithm got wrong carry a red ring. The shading is the
nearest-prototype partition of the 2-D plane, a picture of the idea only: the classifiers work in all D
dimensions, so a query can sit in one shaded region and still be (correctly) classified as another class.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np

from metalearn.demo.result import EpisodeResult
from metalearn.util.errors import MetalearnError
from metalearn.util.fileio import atomic_path

GRID = 400  # decision-region raster, points per side


def pca_2d(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean [D], components [D, 2], explained variance fractions [2]) of rows ``z`` [N, D] by SVD."""
    mean = z.mean(0)
    _, s, vt = np.linalg.svd(z - mean, full_matrices=False)
    var = s**2
    return mean, vt[:2].T, var[:2] / max(var.sum(), 1e-12)


def _regions(ax, protos: np.ndarray, colours: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
    """Shade the nearest-prototype region of each point of the box [lo, hi] (2-D prototypes [W, 2])."""
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], GRID), np.linspace(lo[1], hi[1], GRID))
    grid = np.stack([gx, gy], -1)                                                        # [G, G, 2]
    nearest = ((grid[:, :, None] - protos[None, None]) ** 2).sum(-1).argmin(-1)         # [G, G]
    light = 1 - 0.2 * (1 - colours[:, :3])                                                # pale class colours
    ax.imshow(light[nearest], origin="lower", extent=(lo[0], hi[0], lo[1], hi[1]), aspect="auto",
              interpolation="nearest", zorder=0)
    ax.contour(gx, gy, nearest, levels=np.arange(len(protos) - 1) + 0.5, colors="0.55", linewidths=0.8, zorder=1)


def plot_episode(result: EpisodeResult, path: str | os.PathLike, algorithm: str | None = None) -> Path:
    """Draw ``result`` to the PNG ``path`` (folders created); wrong predictions are those of ``algorithm``
    (default: the first one run). Returns ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    name = algorithm or next(iter(result.algorithms))
    if name not in result.algorithms:
        raise MetalearnError(f"algorithm {name!r} was not run on this episode; expected one of: "
                             f"{', '.join(result.algorithms)}")
    ways = len(result.episode.classes)
    sx, qx = result.support_x.double().numpy(), result.query_x.double().numpy()      # [S, D], [Q, D]
    sy, qy = result.support_y.numpy(), result.query_y.numpy()
    mean, comp, explained = pca_2d(np.concatenate([sx, qx]))
    s2, q2 = (sx - mean) @ comp, (qx - mean) @ comp                                   # [S, 2], [Q, 2]
    protos = (np.stack([sx[sy == c].mean(0) for c in range(ways)]) - mean) @ comp     # [W, 2]
    wrong = result.algorithms[name].predictions.numpy() != qy

    fig = Figure(figsize=(11, 8), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)  # the Agg backend, for this figure only
    ax = fig.add_subplot()
    colours = np.array([class_colour(c) for c in range(ways)])
    pts = np.concatenate([s2, q2, protos])
    pad = 0.08 * (pts.max(0) - pts.min(0) + 1e-9)
    lo, hi = pts.min(0) - pad, pts.max(0) + pad
    _regions(ax, protos, colours, lo, hi)
    ax.scatter(q2[:, 0], q2[:, 1], s=60, facecolors="white", edgecolors=colours[qy], linewidths=2.0, zorder=3)
    ax.scatter(q2[wrong, 0], q2[wrong, 1], s=230, facecolors="none", edgecolors="red", linewidths=1.8, zorder=4)
    ax.scatter(s2[:, 0], s2[:, 1], s=75, c=colours[sy], edgecolors="black", linewidths=0.8, zorder=5)
    ax.scatter(protos[:, 0], protos[:, 1], s=480, marker="*", c=colours, edgecolors="black", linewidths=1.2,
               zorder=6)
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_xlabel(f"PC 1 ({explained[0]:.0%} of the episode's variance)", fontsize=11)
    ax.set_ylabel(f"PC 2 ({explained[1]:.0%})", fontsize=11)
    _legend(ax, colours, result.episode.classes, name)
    _titles(fig, result, sx.shape[1])
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _legend(ax, colours: np.ndarray, classes: tuple[str, ...], name: str) -> None:
    """Classes by colour, then what each marker means, right of the axes."""
    from matplotlib.lines import Line2D

    def handle(marker: str, size: float, face, edge, label: str, width: float = 1.0) -> Line2D:
        return Line2D([], [], ls="", marker=marker, ms=size, mfc=face, mec=edge, mew=width, label=label)

    handles = [handle("o", 10, colours[c], "black", label) for c, label in enumerate(classes)]
    handles += [handle("o", 9, "0.5", "black", "support clip"),
                handle("o", 8, "white", "0.3", "query clip (true class)", 2.0),
                handle("*", 16, "0.5", "black", "prototype (support mean)"),
                handle("o", 14, "none", "red", f"query {name} got wrong", 1.8)]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=10, frameon=False)


def _titles(fig, result: EpisodeResult, dim: int) -> None:
    """The episode and every algorithm's accuracy on top; what the shading means at the bottom."""
    e = result.episode
    accuracies = ", ".join(f"{a.name} {a.accuracy:.0%} ({a.correct}/{a.total})" for a in result.algorithms.values())
    feature = f", {result.feature.name}" if result.feature else ""
    fig.suptitle(f"Speaker {e.speaker}: {len(e.classes)}-way {e.k}-shot episode, {len(e.support)} support and "
                 f"{len(e.query)} query clips{feature}\n" + textwrap.fill(f"accuracy: {accuracies}", 120),
                 fontsize=12)
    fig.supxlabel(textwrap.fill(
        "Shading: nearest-prototype regions of this 2-D projection (PCA of the episode's z-scored support and "
        f"query features). The classifiers work in all {dim} dimensions, so a query may be classified "
        "differently from the region it appears in here.", 150), fontsize=9, color="0.25", x=0.01, ha="left")


def class_colour(c: int) -> np.ndarray:
    """RGBA of class ``c``: tab10 without its red (red marks wrong predictions), then tab20's pale shades."""
    from matplotlib import colormaps

    palette = [colormaps["tab10"](i) for i in (0, 1, 2, 4, 5, 6, 7, 8, 9)]
    palette += [colormaps["tab20"](i) for i in range(1, 20, 2) if i != 7]
    return np.asarray(palette[c % len(palette)])
