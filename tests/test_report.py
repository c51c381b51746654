"""The run report: CSV and Markdown tables that match an independent computation (speakers as the unit),
stable reruns in any record order, figures."""

from __future__ import annotations

import csv
import math
import random
import re
import shutil
from collections import defaultdict
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from scipy import stats

from metalearn.fewshot.trials import RECORD_FIELDS
from metalearn.report.compare import comparisons
from metalearn.report.figures_comparison import comparison_figure
from metalearn.report.plot_speakers import per_speaker_figure
from metalearn.report.plots import metric_figure, plot_metric_vs_k
from metalearn.report.records import TrialLog
from metalearn.report.summary import SUMMARY_FIELDS, summarize
from metalearn.report.tables import chance_level, per_speaker, summary_table, write_report
from metalearn.util.errors import MetalearnError

PRETUNES = ("none", "iemocap+msp_podcast")
ALGORITHMS = ("maml", "protonet", "simpleshot")
KS = (1, 5, 10)
SPEAKERS = ("0011", "0012", "0013", "0014")
REPETITIONS = 3
EXPECTED_FILES = {"trials.csv", "summary.csv", "per_speaker.csv", "summary.md", "comparisons.csv", "comparisons.md",
                  "accuracy_vs_k.png", "macro_f1_vs_k.png", "uar_vs_k.png", "per_speaker.png", "comparison_vs_k.png"}
TEXT_FILES = ("trials.csv", "summary.csv", "per_speaker.csv", "summary.md", "comparisons.csv", "comparisons.md")


def make_records(seed: int = 0, pretunes=PRETUNES, algorithms=ALGORITHMS, ks=KS) -> list[dict]:
    """Synthetic trial records with every RECORD_FIELDS key; metrics drawn from a seeded RNG."""
    rng = np.random.default_rng(seed)
    records = []
    for p in pretunes:
        for a in algorithms:
            for k in ks:
                for s in SPEAKERS:
                    for rep in range(REPETITIONS):
                        acc, f1, wf1, uar = (float(v) for v in rng.uniform(0.1, 0.9, size=4))
                        records.append({
                            "run": "test", "pretune": p, "algorithm": a, "protocol": "nway", "k": k, "speaker": s,
                            "target_emotion": None, "seed": 0, "meta_seed": 0, "layer": "6", "features_of": p,
                            "accuracy": acc, "macro_f1": f1,
                            "weighted_f1": wf1, "uar": uar, "n_support": 5 * k, "n_query": 20, "seconds": 0.01,
                            "episode_id": f"nway-{s}-k{k}-r{rep}", "repetition": rep, "ways": 5})
    assert all(set(r) == set(RECORD_FIELDS) for r in records)
    return records


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def t_interval(values) -> tuple[float, float]:
    """Independent mean and 95% t half-width."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    records = make_records()
    TrialLog(run_dir / "trials.jsonl").extend(records)
    return run_dir, records, write_report(run_dir)


def test_write_report_creates_every_file(report):
    run_dir, _, written = report
    assert set(written) == EXPECTED_FILES
    assert all(path == run_dir / name and path.is_file() for name, path in written.items())
    assert not list(run_dir.glob("*.tmp"))


def test_summary_csv_is_a_t_interval_over_per_speaker_means(report):
    run_dir, records, _ = report
    rows = read_csv(run_dir / "summary.csv")
    assert tuple(rows[0]) == SUMMARY_FIELDS
    assert len(rows) == len(PRETUNES) * len(ALGORITHMS) * len(KS)
    groups = defaultdict(lambda: defaultdict(list))
    for r in records:
        groups[(r["pretune"], r["algorithm"], r["protocol"], str(r["k"]))][r["speaker"]].append(r)
    for row in rows:
        by_speaker = groups.pop((row["pretune"], row["algorithm"], row["protocol"], row["k"]))
        assert int(row["n_trials"]) == sum(map(len, by_speaker.values())) == len(SPEAKERS) * REPETITIONS
        assert int(row["n_speakers"]) == len(by_speaker) == len(SPEAKERS)
        for m in ("accuracy", "macro_f1", "uar", "weighted_f1"):
            mean, half = t_interval([np.mean([r[m] for r in rs]) for rs in by_speaker.values()])
            assert float(row[f"{m}_mean"]) == pytest.approx(mean, rel=1e-12)
            assert float(row[f"{m}_ci95"]) == pytest.approx(half, rel=1e-12)
            trial_half = t_interval([r[m] for rs in by_speaker.values() for r in rs])[1]
            assert float(row[f"{m}_ci95"]) != pytest.approx(trial_half, rel=1e-3)  # not the per-trial interval
    assert not groups  # every group has a row


def test_repeated_trials_of_a_speaker_do_not_narrow_the_interval():
    one = [r for r in make_records(pretunes=("none",)) if r["repetition"] == 0]
    repeated = [r | {"episode_id": f"{r['episode_id']}-copy{i}", "repetition": i} for r in one for i in range(5)]
    a, b = summarize(one), summarize(repeated)
    assert [r["n_trials"] * 5 for r in a] == [r["n_trials"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        assert rb["n_speakers"] == ra["n_speakers"] == len(SPEAKERS)
        for m in ("accuracy", "macro_f1", "uar", "weighted_f1"):
            assert rb[f"{m}_mean"] == pytest.approx(ra[f"{m}_mean"], rel=1e-15)
            assert rb[f"{m}_ci95"] == pytest.approx(ra[f"{m}_ci95"], rel=1e-12)


def test_shuffled_records_give_bit_identical_rows_and_files(report, tmp_path):
    run_dir, records, _ = report
    shuffled = list(records)
    random.Random(1).shuffle(shuffled)
    assert repr(summarize(shuffled)) == repr(summarize(records))
    assert repr(per_speaker(shuffled)) == repr(per_speaker(records))
    out = tmp_path / run_dir.name  # the folder's name is the Markdown title
    out.mkdir()
    write_report(out, shuffled, plots=False)
    for name in TEXT_FILES:
        assert (out / name).read_bytes() == (run_dir / name).read_bytes(), name


def test_per_speaker_csv_has_one_row_per_speaker_and_method(report):
    run_dir, records, _ = report
    rows = read_csv(run_dir / "per_speaker.csv")
    keys = [(r["pretune"], r["algorithm"], r["protocol"], r["k"], r["speaker"]) for r in rows]
    assert len(keys) == len(set(keys)) == len(PRETUNES) * len(ALGORITHMS) * len(KS) * len(SPEAKERS)
    assert all(int(r["n_trials"]) == REPETITIONS for r in rows)
    first = rows[0]
    values = [r["accuracy"] for r in records if (r["pretune"], r["algorithm"], str(r["k"]), r["speaker"])
              == (first["pretune"], first["algorithm"], first["k"], first["speaker"])]
    assert float(first["accuracy_mean"]) == pytest.approx(t_interval(values)[0], rel=1e-12)
    assert float(first["accuracy_ci95"]) == pytest.approx(t_interval(values)[1], rel=1e-12)


def markdown_table(text: str, heading: str) -> list[list[str]]:
    """The cells of the table under ``heading`` (header row first, separator dropped)."""
    block = text.split(heading, 1)[1].split("\n\n", 2)[1]
    lines = [line for line in block.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for i, line in enumerate(lines) if i != 1]


def test_summary_md_has_a_row_per_method_a_column_per_k_and_bolds_the_best(report):
    run_dir, records, _ = report
    text = (run_dir / "summary.md").read_text(encoding="utf-8")
    summary = {(r["pretune"], r["algorithm"], r["k"]): r for r in summarize(records)}
    for heading, metric in (("### Accuracy", "accuracy"), ("### Macro-F1", "macro_f1"), ("### UAR", "uar")):
        header, *body = markdown_table(text, heading)
        assert header[2:] == [f"k = {k}" for k in KS]
        assert sorted((r[0], r[1]) for r in body) == sorted((p, a) for p in PRETUNES for a in ALGORITHMS)
        for col, k in enumerate(KS, start=2):
            best = max(summary[(p, a, k)][f"{metric}_mean"] for p in PRETUNES for a in ALGORITHMS)
            for row in body:
                s = summary[(row[0], row[1], k)]
                cell = row[col]
                assert cell.strip("*") == f"{100 * s[f'{metric}_mean']:.1f} ± {100 * s[f'{metric}_ci95']:.1f}"
                assert cell.startswith("**") == (f"{100 * s[f'{metric}_mean']:.1f}" == f"{100 * best:.1f}")
    assert "n = 4 speakers" in text and "12 trials per cell" in text and "20.0%" in text


def test_pngs_load_and_are_not_trivial(report):
    run_dir, _, written = report
    for name in EXPECTED_FILES:
        if name.endswith(".png"):
            image = matplotlib.image.imread(written[name])
            assert written[name].stat().st_size > 20_000, name
            assert image.shape[0] > 300 and image.shape[1] > 500 and float(image.std()) > 0.05, name


def test_rerun_gives_byte_identical_tables(report):
    run_dir, _, _ = report
    before = {name: (run_dir / name).read_bytes() for name in TEXT_FILES}
    write_report(run_dir)
    assert {name: (run_dir / name).read_bytes() for name in TEXT_FILES} == before


def test_report_from_trials_csv_alone_gives_the_same_summary(report, tmp_path):
    run_dir, _, _ = report
    shutil.copy(run_dir / "trials.csv", tmp_path / "trials.csv")
    write_report(tmp_path)
    for name in ("summary.csv", "per_speaker.csv", "comparisons.csv"):
        assert (tmp_path / name).read_bytes() == (run_dir / name).read_bytes(), name


def test_missing_or_empty_run_folder_raises(tmp_path):
    with pytest.raises(MetalearnError, match="no such run folder"):
        write_report(tmp_path / "absent")
    with pytest.raises(MetalearnError, match="no trial records"):
        write_report(tmp_path)
    (tmp_path / "trials.jsonl").touch()
    with pytest.raises(MetalearnError, match="no trial records"):
        write_report(tmp_path)
    assert not (tmp_path / "summary.csv").exists()


def test_k_zero_is_plotted_on_a_symlog_axis_with_integer_ticks(tmp_path):
    rows = summarize(make_records(ks=(0, 1, 5)))
    fig = metric_figure(rows, "accuracy", chance=0.2)
    ax = fig.axes[0]
    assert ax.get_xscale() == "symlog"
    assert [ax.xaxis.get_major_formatter()(k, 0) for k in ax.get_xticks()] == ["0", "1", "5"]
    assert ax.get_xlim()[0] < 0 < 5 < ax.get_xlim()[1]  # k = 0 and k = 5 are inside, not on the frame
    assert metric_figure(summarize(make_records()), "accuracy").axes[0].get_xscale() == "log"
    path = plot_metric_vs_k(rows, "uar", tmp_path / "uar.png", chance=0.2)
    assert matplotlib.image.imread(path).shape[0] > 300


def test_one_panel_per_pretune_and_one_colour_per_algorithm():
    fig = metric_figure(summarize(make_records(pretunes=("a", "b", "c", "d", "e"))), "macro_f1", chance=0.2)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["a", "b", "c", "d", "e"]
    colours = [{line.get_label(): line.get_color() for line in ax.get_lines() if line.get_label() in ALGORITHMS}
               for ax in panels]
    assert all(c == colours[0] for c in colours) and len(set(map(str, colours[0].values()))) == len(ALGORITHMS)
    chance_lines = [line for line in panels[0].get_lines() if line.get_linestyle() == "--"]
    assert len(chance_lines) == 1 and chance_lines[0].get_ydata()[0] == pytest.approx(20.0)
    assert len(fig.legends) == 1 and "nway" in fig.get_suptitle() and "Macro-F1" in fig.get_suptitle()


def test_majority_rows_replace_the_chance_line_with_a_baseline():
    records = make_records(pretunes=("none", "big"), algorithms=("finetune", "majority"))
    rows = summarize(records)
    fig = metric_figure(rows, "accuracy", chance=0.2)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    for ax, pretune in zip(panels, ("none", "big"), strict=True):  # none first
        (line,) = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
        expected = [100 * r["accuracy_mean"] for r in rows if (r["pretune"], r["algorithm"]) == (pretune, "majority")]
        assert list(line.get_ydata()) == pytest.approx(expected)
        assert "majority" not in {line.get_label() for line in ax.get_lines()}  # not drawn as a method
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "majority baseline" in labels and not any("chance" in t for t in labels)
    no_majority = metric_figure(summarize(make_records(algorithms=("finetune",))), "accuracy", chance=0.2)
    assert any("chance" in t.get_text() for t in no_majority.legends[0].get_texts())


def test_comparison_figure_has_a_panel_per_variant_and_a_zero_line():
    records = make_records(pretunes=("none", "big", "huge"), algorithms=("finetune", "protonet", "majority"))
    fig = comparison_figure(comparisons(records, reference="finetune"))
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["none", "big", "huge"]  # none first
    for ax in panels:
        assert any(list(line.get_ydata()) == [0.0, 0.0] for line in ax.get_lines())  # the zero line
        assert len(ax.containers) == 1  # protonet's error bars; majority left out of the picture
    assert "finetune" in fig.get_suptitle() and "n = 4 speakers" in fig.get_suptitle()
    variants_only = comparison_figure(comparisons(records, reference="absent"))
    assert [ax.get_title() for ax in variants_only.axes if ax.get_visible()] == ["big", "huge"]
    assert "none variant" in variants_only.get_suptitle()


def test_per_speaker_heat_map_defaults_to_the_median_k():
    rows = per_speaker(make_records())
    fig = per_speaker_figure(rows)
    assert "k = 5" in fig.get_suptitle()
    assert len(fig.axes[0].texts) == len(SPEAKERS) * len(PRETUNES) * len(ALGORITHMS)  # annotated cells
    with pytest.raises(MetalearnError, match="no k = 7"):
        per_speaker_figure(rows, k=7)


def test_summary_table_and_chance_level():
    records = make_records(pretunes=("none",))
    table = summary_table(summarize(records))
    lines = table.splitlines()
    assert len(lines) == 1 + len(ALGORITHMS) and all(f"k={k}" in lines[0] for k in KS)
    assert all(len(re.findall(r"\d+\.\d±\d+\.\d", line)) == len(KS) for line in lines[1:])
    assert chance_level(records) == pytest.approx(0.2)


def test_summary_says_which_feature_each_variant_read_and_which_rows_are_copies() -> None:
    from metalearn.report.tables import features_lines

    rows = [{"pretune": "none", "layer": "1", "features_of": "none"},
            {"pretune": "none", "layer": "3", "features_of": "none"},
            {"pretune": "pft-a", "layer": "1", "features_of": "none"},
            {"pretune": "clap-sl-a", "layer": "clap", "features_of": "clap-sl-a"}]
    text = "\n".join(features_lines(rows))
    assert "- none: state 1, state 3 (differs between folds)" in text
    assert "- pft-a: state 1; identical features to none" in text
    assert "- clap-sl-a: its own CLAP embedding" in text
    assert features_lines([{"pretune": "none", "layer": "", "features_of": ""}]) == []  # records before the fields
