"""The papers' figures: variants on one axis and the variant x k map of the difference to none (written by the
report from 3 variants on), one colour per algorithm in every figure, the k label of each protocol, outliers of
the comparison plot in their own panels."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest
from matplotlib.colors import to_hex
from matplotlib.patches import Rectangle

from metalearn.fewshot.trials import RECORD_FIELDS
from metalearn.report.compare import comparisons
from metalearn.report.figures_comparison import comparison_figure, outliers
from metalearn.report.figures_style import algorithm_style, k_label, ordered_variants
from metalearn.report.figures_variants import difference_heatmap, variants_figure
from metalearn.report.plots import metric_figure
from metalearn.report.summary import summarize
from metalearn.report.tables import write_report

VARIANTS = ("pft-b+c", "none", "pft-a+b+c", "pft-a")   # not in order: the figures order them
KS = (2, 8, 32)
SPEAKERS = ("0001", "0002", "0003", "0004")
GAIN = {"none": 0.0, "pft-a": 0.02, "pft-b+c": 0.0, "pft-a+b+c": 0.08}


def mock_records(algorithms=("finetune", "maml", "majority"), protocol="binary", variants=VARIANTS,
                 offsets=None) -> list[dict]:
    """4 variants x 3 k x 4 speakers x 2 repetitions per algorithm; ``pft-a+b+c`` clearly better than none."""
    rng = np.random.default_rng(0)
    offsets = offsets or {}
    records = []
    for p in variants:
        for a in algorithms:
            for k in KS:
                for s in SPEAKERS:
                    for rep in range(2):
                        acc = 0.8 if a == "majority" else float(np.clip(
                            0.6 + GAIN[p] + offsets.get(a, 0.0) + rng.normal(0, 0.01), 0, 1))
                        values = {"run": "t", "pretune": p, "algorithm": a, "protocol": protocol, "k": k,
                                  "speaker": s, "target_emotion": "happy", "seed": 0, "meta_seed": 0, "layer": "3",
                                  "features_of": p, "accuracy": acc, "macro_f1": acc - 0.1, "weighted_f1": acc,
                                  "uar": acc - 0.05, "n_support": k, "n_query": 10, "seconds": 0.01,
                                  "episode_id": f"{protocol}/k{k}/{s}/r{rep}", "repetition": rep, "ways": 2}
                        records.append({f: values[f] for f in RECORD_FIELDS})
    return records


def line_colours(fig, name: str) -> set[str]:
    return {to_hex(line.get_color()) for ax in fig.axes for line in ax.get_lines() if line.get_label() == name}


def test_the_report_writes_the_variant_figures_from_three_variants(tmp_path):
    written = write_report(tmp_path, mock_records())
    for metric in ("accuracy", "macro_f1", "uar"):
        for name in (f"variants_{metric}_vs_k.png", f"variants_{metric}_diff.png"):
            assert name in written and matplotlib.image.imread(written[name]).shape[0] > 400
    two = tmp_path / "two"
    two.mkdir()
    assert not any(n.startswith("variants_") for n in write_report(two, mock_records(variants=("none", "pft-a"))))


def test_an_algorithm_has_one_colour_in_every_figure():
    records = mock_records()
    maml = {algorithm_style("maml")[0]}
    assert line_colours(metric_figure(summarize(records), "accuracy"), "maml") == maml
    assert line_colours(comparison_figure(comparisons(records, reference="finetune")), "maml") == maml
    alone = mock_records(algorithms=("maml", "protonet"))  # other company, same colour
    assert line_colours(metric_figure(summarize(alone), "accuracy"), "maml") == maml
    assert algorithm_style("maml") != algorithm_style("protonet")


def test_variants_share_one_axis_in_corpus_order_and_k_says_support_size():
    fig = variants_figure(summarize(mock_records()), "accuracy")
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["finetune", "maml"]  # one panel per algorithm, not per variant
    labels = [line.get_label() for line in axes[0].get_lines() if not line.get_label().startswith("_")]
    assert labels == ["none", "pft-a", "pft-b+c", "pft-a+b+c"]
    assert axes[0].get_xlabel() == "k (support size)"
    baseline = [line for line in axes[0].get_lines() if line.get_linestyle() == "--" and line.get_label()[0] == "_"]
    assert baseline and list(baseline[0].get_ydata()) == pytest.approx([80.0] * len(KS))  # majority, not 50%
    nway = metric_figure(summarize(mock_records(protocol="nway")), "accuracy")
    assert {ax.get_xlabel() for ax in nway.axes if ax.get_xlabel()} == {"k (shots per class)"}
    assert k_label("binary") == "k (support size)" and ordered_variants(VARIANTS)[0] == "none"


def test_heat_map_cells_state_the_difference_and_mark_intervals_that_exclude_zero():
    rows = [r for r in comparisons(mock_records(), reference="absent") if r["metric"] == "accuracy"]
    fig = difference_heatmap(rows, "accuracy")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["pft-a", "pft-b+c", "pft-a+b+c"]
    mine = [r for r in rows if r["algorithm"] == "finetune"]
    texts = {t.get_text() for t in ax.texts}
    for r in mine:
        low = 100 * r["diff_ci_low"]
        assert any(t.startswith(f"{100 * r['diff_mean']:+.1f}".replace("+0.0", "0.0")) for t in texts)
        assert any(f"[{low:+.1f}" in t or "[0.0" in t for t in texts)
    framed = [p for p in ax.patches if isinstance(p, Rectangle) and p.get_hatch() is None and not p.get_fill()]
    assert len(framed) == sum(r["diff_ci_low"] > 0 or r["diff_ci_high"] < 0 for r in mine)
    assert len(framed) >= len(KS)  # pft-a+b+c is 8 points better at every k


def test_an_outlier_method_gets_its_own_panel_and_the_many_keep_their_scale():
    records = mock_records(algorithms=("finetune", "maml", "protonet", "full_finetune"), variants=("none",),
                           offsets={"maml": 0.02, "protonet": -0.01, "full_finetune": -0.4})
    rows = comparisons(records, reference="finetune")
    assert outliers([r for r in rows if r["metric"] == "accuracy"]) == ["full_finetune"]
    fig = comparison_figure(rows)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == 2
    top, bottom = panels
    assert top.get_ylim()[0] > -10 and bottom.get_ylim()[0] < -35  # the shared axis is not stretched to -40
    assert {line.get_label() for line in bottom.get_lines()} >= {"full_finetune"}
    assert "full_finetune" not in {line.get_label() for line in top.get_lines()}


def test_every_dodged_point_of_the_comparison_figure_lies_inside_its_panel():
    """Ten methods dodged around each k: the outermost markers at the largest and smallest k stay in view."""
    names = ("finetune", "maml", "anil", "reptile", "protonet", "protonet_proj", "simpleshot", "transfer",
             "texthead", "majority")
    records = mock_records(algorithms=names, variants=("none",), offsets={a: 0.01 * i for i, a in enumerate(names)})
    fig = comparison_figure(comparisons(records, reference="finetune"))
    for ax in (a for a in fig.axes if a.get_visible()):
        lo, hi = ax.get_xlim()
        xs = [x for line in ax.get_lines() if line.get_label() in names for x in line.get_xdata()]
        assert xs and max(xs) > max(KS) and min(xs) < min(KS)  # dodged beyond the k values themselves
        assert lo < min(xs) and max(xs) < hi
