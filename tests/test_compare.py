"""Paired comparisons: pairing on episodes, speakers as the unit, Holm per metric, files that recompute."""

from __future__ import annotations

import csv
import math
import random
from collections import defaultdict

import numpy as np
import pytest
from scipy import stats

from metalearn.report.compare import COMPARISON_FIELDS, comparisons, comparisons_markdown
from metalearn.report.records import read_trials_csv
from metalearn.report.stats import holm
from metalearn.report.summary import METRICS
from metalearn.report.tables import write_report
from tests.reference_impls import compare_cells

SPEAKERS = ("s1", "s2", "s3", "s4", "s5")


def make_records(pretunes=("none", "big"), algorithms=("finetune", "protonet"), ks=(1, 4), reps=3, seed=0,
                 zero_shot=True) -> list[dict]:
    """Trials with a per-episode difficulty shared by every method (what pairing removes) and noise."""
    rng = np.random.default_rng(seed)
    gain = {(p, a): 0.03 * i for i, (p, a) in enumerate((p, a) for p in pretunes for a in algorithms)}
    records = []
    for k in ks:
        for s in SPEAKERS:
            for rep in range(reps):
                eid = f"nway-{s}-k{k}-r{rep}"
                hard = rng.uniform(0.3, 0.7)
                for p in pretunes:
                    for a in algorithms:
                        records.append(_record(p, a, k, s, eid, rep, hard + gain[(p, a)] + rng.normal(0, 0.02)))
                    if zero_shot and k == ks[0]:  # zero-shot: k = 0, scored on the smallest k's episodes
                        records.append(_record(p, "zeroshot", 0, s, eid, rep, hard + rng.normal(0, 0.02)))
    return records


def _record(pretune, algorithm, k, speaker, eid, rep, value) -> dict:
    return {"run": "t", "pretune": pretune, "algorithm": algorithm, "protocol": "nway", "k": k, "speaker": speaker,
            "target_emotion": None, "seed": 0, "accuracy": value, "macro_f1": value - 0.01, "weighted_f1": value,
            "uar": value + 0.01, "n_support": 4 * k, "n_query": 20, "seconds": 0.01, "episode_id": eid,
            "repetition": rep, "ways": 4}


def independent(records, method, reference, k, metric="accuracy"):
    """Per-speaker mean paired differences computed with plain dicts; then mean, CI and scipy's ttest_rel."""
    a = {(r["episode_id"], r["seed"]): r for r in records if (r["pretune"], r["algorithm"], r["k"]) == (*method, k)}
    b = {(r["episode_id"], r["seed"]): r for r in records if (r["pretune"], r["algorithm"], r["k"]) == (*reference, k)}
    per = defaultdict(list)
    for key in a.keys() & b.keys():
        per[a[key]["speaker"]].append(a[key][metric] - b[key][metric])
    d = np.array([np.mean(per[s]) for s in sorted(per)])
    half = stats.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size)
    ma = [np.mean([a[key][metric] for key in a if a[key]["speaker"] == s]) for s in sorted(per)]
    mb = [np.mean([b[key][metric] for key in b if b[key]["speaker"] == s]) for s in sorted(per)]
    return d, half, stats.ttest_rel(ma, mb).pvalue


def find(rows, pretune, algorithm, reference_pretune, reference, k, metric="accuracy"):
    (row,) = [r for r in rows if (r["pretune"], r["algorithm"], r["reference_pretune"], r["reference"], r["k"],
                                  r["metric"]) == (pretune, algorithm, reference_pretune, reference, k, metric)]
    return row


def test_rows_match_an_independent_paired_computation():
    records = make_records()
    rows = comparisons(records)
    assert all(tuple(r) == COMPARISON_FIELDS for r in rows)
    for method, reference in ((("big", "protonet"), ("big", "finetune")), (("big", "finetune"), ("none", "finetune"))):
        d, half, p = independent(records, method, reference, 4)
        row = find(rows, *method, *reference, 4)
        assert row["diff_mean"] == pytest.approx(d.mean(), rel=1e-12)
        assert (row["diff_ci_low"], row["diff_ci_high"]) == pytest.approx((d.mean() - half, d.mean() + half))
        assert row["p_value"] == pytest.approx(p, rel=1e-10)
        assert (row["n_speakers"], row["n_trials"]) == (len(SPEAKERS), len(SPEAKERS) * 3)
        assert (row["better"], row["equal"], row["worse"]) == ((d > 0).sum(), (d == 0).sum(), (d < 0).sum())


def test_the_planned_comparisons_and_the_k_zero_rule():
    rows = comparisons(make_records(), reference="finetune")
    kinds = {(r["pretune"], r["algorithm"], r["reference_pretune"], r["reference"], r["k"]) for r in rows}
    assert kinds == {("none", "protonet", "none", "finetune", 1), ("none", "protonet", "none", "finetune", 4),
                     ("big", "protonet", "big", "finetune", 1), ("big", "protonet", "big", "finetune", 4),
                     ("big", "finetune", "none", "finetune", 1), ("big", "finetune", "none", "finetune", 4),
                     ("big", "protonet", "none", "protonet", 1), ("big", "protonet", "none", "protonet", 4),
                     ("big", "zeroshot", "none", "zeroshot", 0)}  # k = 0 pairs with k = 0 only
    assert len(rows) == len(kinds) * len(METRICS)
    no_reference = comparisons(make_records(), reference="absent")
    assert no_reference and all(r["reference_pretune"] == "none" != r["pretune"] for r in no_reference)
    no_none = comparisons(make_records(pretunes=("big",)))
    assert no_none and all(r["reference"] == "finetune" and r["reference_pretune"] == "big" for r in no_none)
    assert comparisons(make_records(pretunes=("big",), algorithms=("protonet",))) == []


def test_a_method_against_itself_gives_zero_and_p_one():
    records = make_records(pretunes=("none",), algorithms=("finetune",), zero_shot=False)
    clone = [r | {"algorithm": "clone"} for r in records]
    rows = comparisons(records + clone)
    assert rows and all(r["diff_mean"] == r["diff_ci_low"] == r["diff_ci_high"] == 0.0 for r in rows)
    assert all(r["p_value"] == r["p_holm"] == 1.0 and r["equal"] == len(SPEAKERS) for r in rows)
    stat = compare_cells([r for r in records if r["k"] == 1], [r for r in records if r["k"] == 1], "uar")
    assert stat["diff_mean"] == 0.0 and stat["p_value"] == 1.0


def test_holm_is_applied_per_metric_over_the_whole_file():
    rows = comparisons(make_records())
    for metric in METRICS:
        family = [r for r in rows if r["metric"] == metric]
        assert [r["p_holm"] for r in family] == pytest.approx(list(holm([r["p_value"] for r in family])))
        assert all(r["p_holm"] >= r["p_value"] for r in family)


def test_shuffling_records_changes_no_bit():
    rng = np.random.default_rng(5)  # meta seeds against a reference without them: averaged per episode first
    records = make_records() + [r | {"algorithm": "maml", "meta_seed": m, "accuracy": float(rng.uniform(0, 1))}
                                for r in make_records(algorithms=("finetune",), zero_shot=False) for m in range(3)]
    before = comparisons(records)
    for seed in range(3):
        shuffled = list(records)
        random.Random(seed).shuffle(shuffled)
        assert repr(comparisons(shuffled)) == repr(before)


def test_meta_seeds_pair_when_both_sides_have_them_and_are_averaged_otherwise():
    ref = [_record("none", "finetune", 1, s, f"e-{s}-{i}", i, 0.5) for s in SPEAKERS for i in range(2)]
    meta = [r | {"algorithm": "maml", "meta_seed": m, "accuracy": 0.6 + 0.1 * m} for r in ref for m in (0, 1)]
    row = find(comparisons(ref + meta), "none", "maml", "none", "finetune", 1)
    assert row["diff_mean"] == pytest.approx(0.15) and row["n_trials"] == 2 * len(SPEAKERS)
    both = [r | {"meta_seed": m, "accuracy": 0.5 + 0.1 * m} for r in ref for m in (0, 1)]
    row = find(comparisons(both + meta), "none", "maml", "none", "finetune", 1)
    assert row["diff_mean"] == pytest.approx(0.1) and row["n_trials"] == 4 * len(SPEAKERS)


def test_three_meta_seeds_against_a_one_seed_reference_use_all_three():
    """Every record carries a meta_seed now: a reference meta-trained never (meta_seed 0 only) must not pair with
    meta seed 0 alone; the method's 3 meta seeds are averaged per episode first."""
    ref = [_record("none", "finetune", 1, s, f"e-{s}-{i}", i, 0.5) | {"meta_seed": 0}
           for s in SPEAKERS for i in range(2)]
    meta = [r | {"algorithm": "maml", "meta_seed": m, "accuracy": 0.6 + 0.1 * m} for r in ref for m in (0, 1, 2)]
    row = find(comparisons(ref + meta), "none", "maml", "none", "finetune", 1)
    assert row["diff_mean"] == pytest.approx(0.2) and row["n_trials"] == 2 * len(SPEAKERS)  # not 0.1 (seed 0 only)
    assert compare_cells(meta, ref, "accuracy")["diff_mean"] == pytest.approx(0.2)


def test_comparisons_csv_recomputes_from_trials_csv(tmp_path):
    records = make_records()
    written = write_report(tmp_path, records, reference="finetune", plots=False)
    assert {"comparisons.csv", "comparisons.md"} <= set(written)
    with open(tmp_path / "comparisons.csv", newline="", encoding="utf-8") as f:
        from_file = list(csv.DictReader(f))
    again = comparisons(read_trials_csv(tmp_path / "trials.csv"))
    assert len(from_file) == len(again) > 0
    for a, b in zip(from_file, again, strict=True):
        assert [a[c] for c in COMPARISON_FIELDS[:7]] == [str(b[c]) for c in COMPARISON_FIELDS[:7]]
        for c in COMPARISON_FIELDS[7:]:
            assert float(a[c]) == pytest.approx(float(b[c]), abs=1e-9), c


def test_markdown_lists_each_comparison_in_points():
    rows = comparisons(make_records())
    text = comparisons_markdown(rows, "T")
    assert "### Accuracy: algorithm vs finetune" in text and "### UAR: pretune variant vs none" in text
    row = find(rows, "big", "protonet", "big", "finetune", 4)
    line = next(line for line in text.splitlines() if line.startswith("| big | protonet | finetune | 4 |"))
    assert f"{100 * row['diff_mean']:+.1f} [{100 * row['diff_ci_low']:+.1f}, {100 * row['diff_ci_high']:+.1f}]" in line
    assert f"{row['better']} / {row['equal']} / {row['worse']}" in line
    assert "No comparison" in comparisons_markdown([], "T")


def test_copied_variant_rows_are_no_comparison():
    """A variant whose rows copy none's identical features gives no variant-vs-none row (and no Holm term); the
    Markdown names the pair instead. Rows of its own features are compared as usual."""
    from metalearn.report.compare import identical_pairs

    records = make_records(zero_shot=False)
    for r in records:
        r["features_of"] = "none" if r["pretune"] == "big" and r["algorithm"] == "protonet" else r["pretune"]
    rows = comparisons(records)
    versus_none = {(r["pretune"], r["algorithm"]) for r in rows if r["reference_pretune"] == "none" != r["pretune"]}
    assert versus_none == {("big", "finetune")}
    assert identical_pairs(records) == [("big", "none", "protonet")]
    text = comparisons_markdown(rows, "t", identical=identical_pairs(records))
    assert "Not compared, identical features: big vs none for protonet" in text
