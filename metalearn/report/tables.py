"""``python -m metalearn report RUN_DIR``: tables and figures of a run's trial records.

:func:`write_report` reads the records of a run folder (``trials*.jsonl``, else ``trials.csv``) and writes,
next to them and atomically: ``trials.csv``, ``summary.csv`` (mean over speakers of per-speaker means and
its 95% t-interval per pretune, algorithm, protocol and k), ``per_speaker.csv``, ``summary.md`` (paper-ready
Markdown tables), ``comparisons.csv`` / ``comparisons.md`` (paired differences to a reference algorithm and
to the ``none`` variant, :mod:`metalearn.report.compare`), ``content.csv`` / ``content.md`` (the content
check, :mod:`metalearn.report.content`, when the run logged per-query records) and the PNG figures of
:mod:`metalearn.report.plots`. Same records in any order, byte-identical CSV and Markdown files.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from functools import partial
from pathlib import Path

import yaml

from metalearn.report.compare import COMPARISON_FIELDS, comparisons, comparisons_markdown, identical_pairs
from metalearn.report.content import CONTENT_FIELDS, content_markdown, content_rows, read_queries
from metalearn.report.context import learned_lines, protocol_lines
from metalearn.report.records import read_skips, read_trials, skip_summary, skipped_only, write_trials_csv
from metalearn.report.summary import METRIC_LABELS, SUMMARY_FIELDS, summarize
from metalearn.util import markdown
from metalearn.util.errors import MetalearnError
from metalearn.util.fileio import write_atomic
from metalearn.util.intervals import t_interval
from metalearn.util.workers import run_forked

log = logging.getLogger(__name__)

METRICS = ("accuracy", "macro_f1", "uar")
METRIC_NAMES = {m: METRIC_LABELS[m] for m in METRICS}
PER_SPEAKER_FIELDS = ("pretune", "algorithm", "protocol", "k", "speaker", "n_trials", "accuracy_mean",
                      "accuracy_ci95", "macro_f1_mean", "macro_f1_ci95", "uar_mean", "uar_ci95")


def per_speaker(records: Iterable[dict]) -> list[dict]:
    """Mean and 95% t-interval over trials of accuracy, macro-F1 and UAR per (pretune, algorithm, protocol, k,
    speaker): the spread of one speaker's episodes (values sorted first, so the records' order changes no bit)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["pretune"], r["algorithm"], r["protocol"], int(r["k"]), str(r["speaker"]))].append(r)
    rows = []
    for key, rs in sorted(groups.items()):
        row = dict(zip(PER_SPEAKER_FIELDS[:5], key, strict=True)) | {"n_trials": len(rs)}
        for m in METRICS:
            row[f"{m}_mean"], row[f"{m}_ci95"], _ = t_interval(sorted(float(r[m]) for r in rs))  # order-free
        rows.append(row)
    return rows


def protocols_by_size(records: Sequence[dict]) -> list[str]:
    """The protocols present, the one with the most records first (ties: by name)."""
    counts: dict[str, int] = defaultdict(int)
    for r in records:
        counts[r["protocol"]] += 1
    return sorted(counts, key=lambda p: (-counts[p], p))


def chance_level(records: Iterable[dict]) -> float | None:
    """Expected accuracy of a uniform guess: the mean of 1 / ways over the records (None without ways)."""
    inverse = [1.0 / int(r["ways"]) for r in records if int(r.get("ways") or 0) > 0]
    return sum(inverse) / len(inverse) if inverse else None


def _csv_text(rows: Sequence[dict], fields: Sequence[str]) -> str:
    """CSV with floats as ``str(float)`` (shortest repr: exact and stable across reruns)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(fields)
    for row in rows:
        writer.writerow([str(row[f]) for f in fields])
    return out.getvalue()


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _range(values: Iterable[int]) -> str:
    values = sorted(set(values))
    return f"{values[0]}" if values[0] == values[-1] else f"{values[0]}–{values[-1]}"


def _markdown_table(rows: Sequence[dict], metric: str) -> list[str]:
    """Rows pretune / algorithm, columns k, cells "mean ± ci95" in percent; the best mean per column bold."""
    ks = sorted({int(r["k"]) for r in rows})
    cell = {(r["pretune"], r["algorithm"], int(r["k"])): r for r in rows}
    best = {}
    for k in ks:
        means = [float(r[f"{metric}_mean"]) for r in rows if int(r["k"]) == k]
        means = [m for m in means if m == m]  # drop NaN
        best[k] = _pct(max(means)) if means else None
    body = []
    for pretune, algorithm in sorted({(r["pretune"], r["algorithm"]) for r in rows}):
        cells = []
        for k in ks:
            r = cell.get((pretune, algorithm, k))
            mean = float(r[f"{metric}_mean"]) if r else float("nan")
            if mean != mean:
                cells.append("–")
                continue
            half = float(r[f"{metric}_ci95"])
            text = _pct(mean) if half != half else f"{_pct(mean)} ± {_pct(half)}"
            cells.append(f"**{text}**" if _pct(mean) == best[k] else text)
        body.append([pretune, algorithm, *cells])
    return markdown.table(["Pretune", "Algorithm", *(f"k = {k}" for k in ks)], body,
                          [markdown.LEFT] * 2 + [markdown.RIGHT] * len(ks))


def _chance_text(records: Sequence[dict]) -> str:
    ways = sorted({int(r["ways"]) for r in records if int(r.get("ways") or 0) > 0})
    if not ways:
        return "chance level unknown (no ways in the records)"
    if len(ways) == 1:
        return f"chance level (1/ways) {_pct(1 / ways[0])}% ({ways[0]} ways)"
    return f"chance level (1/ways) {_pct(1 / ways[-1])}–{_pct(1 / ways[0])}% ({ways[0]}–{ways[-1]} ways)"


def summary_markdown(records: Sequence[dict], summary_rows: Sequence[dict], title: str,
                     skipped: Sequence[dict] = (), context: Sequence[str] = ()) -> str:
    """The ``summary.md`` text: per protocol, one table per metric (accuracy, macro-F1, UAR); ``skipped``: the skip
    records of trials that could not be scored (counted, with their reasons, under the title); ``context``: lines
    on how the trials were set up (:mod:`metalearn.report.context`), before the features read."""
    lines = [f"# {title}", "", f"{len(records)} trials; " + ", ".join(
        f"{p}: {sum(r['protocol'] == p for r in records)}" for p in protocols_by_size(records)) + ".", ""]
    if skipped:
        lines += [f"Not in the tables: {skip_summary(skipped)}.", ""]
    lines += [*context, *features_lines(records)]
    for protocol in protocols_by_size(records):
        recs = [r for r in records if r["protocol"] == protocol]
        rows = [r for r in summary_rows if r["protocol"] == protocol]
        n_speakers = len({str(r["speaker"]) for r in recs})
        lines += [f"## {protocol} protocol", "", f"{len(recs)} trials, {n_speakers} speakers.", ""]
        for metric in METRICS:
            lines += [f"### {METRIC_NAMES[metric]} (%)", "", *_markdown_table(rows, metric), ""]
            lines += [f"Cells: mean ± 95% t-interval half-width over n = {_range(r['n_speakers'] for r in rows)} "
                      f"speakers (df = n − 1) of per-speaker means ({_range(r['n_trials'] for r in rows)} trials "
                      f"per cell), in percent; best mean per column in bold; {_chance_text(recs)}.", ""]
    return "\n".join(lines)


def _feature_name(layer: str) -> str:
    return {"mean": "the mean of all states", "clap": "its own CLAP embedding"}.get(layer, f"state {layer}")


def features_lines(records: Sequence[dict]) -> list[str]:
    """What each pretune variant's trials read (the records' ``layer``, several when folds chose differently),
    and which variants' rows are copies of another's identical features (``features_of``); [] for records that
    predate those fields."""
    layers: dict[str, set[str]] = defaultdict(set)
    copied: dict[str, set[str]] = defaultdict(set)
    for r in records:
        if r.get("layer"):
            layers[r["pretune"]].add(str(r["layer"]))
        if r.get("features_of") and r["features_of"] != r["pretune"]:
            copied[r["pretune"]].add(r["features_of"])
    if not layers:
        return []
    order = lambda s: (not s.isdigit(), int(s) if s.isdigit() else 0, s)  # noqa: E731
    lines = ["Features read (`layer` of the trial records):", ""]
    for pretune in sorted(layers):
        read = ", ".join(_feature_name(s) for s in sorted(layers[pretune], key=order))
        per_fold = " (differs between folds)" if len(layers[pretune]) > 1 else ""
        same = (f"; identical features to {', '.join(sorted(copied[pretune]))}: its trials of the methods on "
                f"embeddings are copies, not a finding" if copied[pretune] else "")
        lines.append(f"- {pretune}: {read}{per_fold}{same}")
    return [*lines, ""]


def summary_table(summary_rows: Sequence[dict], metric: str = "accuracy") -> str:
    """Fixed-width text table for the terminal: rows (protocol) pretune / algorithm, columns k, "mean±ci" in %."""
    if not summary_rows:
        return "(no results)"
    ks = sorted({int(r["k"]) for r in summary_rows})
    with_protocol = len({r["protocol"] for r in summary_rows}) > 1
    cells: dict[str, dict[int, str]] = defaultdict(dict)
    for r in summary_rows:
        label = (f"{r['protocol']}: " if with_protocol else "") + f"{r['pretune']} / {r['algorithm']}"
        mean, half = float(r[f"{metric}_mean"]), float(r[f"{metric}_ci95"])
        cells[label][int(r["k"])] = "-" if mean != mean else _pct(mean) + ("" if half != half else f"±{_pct(half)}")
    width = max(len(label) for label in [*cells, "method"])
    col = max([len(f"k={k}") for k in ks] + [len(c) for row in cells.values() for c in row.values()])
    head = f"{METRIC_NAMES.get(metric, metric)} (%)".ljust(width)
    lines = [head + "  " + "  ".join(f"k={k}".rjust(col) for k in ks)]
    for label in sorted(cells):
        lines.append(label.ljust(width) + "  " + "  ".join(cells[label].get(k, "-").rjust(col) for k in ks))
    return "\n".join(lines)


VARIANT_FIGURES_FROM = 3  # pretune variants (none included) from which the variant figures are drawn


def _write_plots(run_dir: Path, records: Sequence[dict], summary_rows: Sequence[dict],
                 speaker_rows: Sequence[dict], comparison_rows: Sequence[dict], workers: int | None = None
                 ) -> dict[str, Path]:
    """The PNG figures: per protocol, each metric against k and the paired differences; with at least
    :data:`VARIANT_FIGURES_FROM` pretune variants, the variants on one axis per algorithm
    (``variants_{metric}_vs_k.png``) and, when ``none`` is among them, the variant x k map of the paired
    difference to ``none`` (``variants_{metric}_diff.png``); the per-speaker heat map. Drawn by ``workers``
    processes side by side (:func:`metalearn.util.workers.run_forked`; None: one per CPU)."""
    from metalearn.report.figures_comparison import plot_comparisons
    from metalearn.report.figures_variants import plot_difference_heatmap, plot_variants
    from metalearn.report.plot_speakers import plot_per_speaker
    from metalearn.report.plots import plot_metric_vs_k

    jobs = {}  # file name -> the job drawing it (one core's work each: matplotlib draws in one thread)
    protocols = protocols_by_size(records)
    for i, protocol in enumerate(protocols):
        chance = chance_level(r for r in records if r["protocol"] == protocol)
        suffix = "" if i == 0 else f"_{protocol}"
        for metric in METRICS:
            name = f"{metric}_vs_k{suffix}.png"
            jobs[name] = partial(plot_metric_vs_k, summary_rows, metric, run_dir / name, chance=chance,
                                 protocol=protocol)
        if any(r["protocol"] == protocol for r in comparison_rows):
            name = f"comparison_vs_k{suffix}.png"
            jobs[name] = partial(plot_comparisons, comparison_rows, run_dir / name, protocol=protocol)
        mine = [r for r in summary_rows if r["protocol"] == protocol]
        if len({r["pretune"] for r in mine}) < VARIANT_FIGURES_FROM or all(r["algorithm"] == "majority" for r in mine):
            continue
        versus_none = [r for r in comparison_rows if r["protocol"] == protocol and r["reference_pretune"] == "none"
                       and r["pretune"] != "none" and r["algorithm"] == r["reference"] != "majority"]
        for metric in METRICS:
            name = f"variants_{metric}_vs_k{suffix}.png"
            jobs[name] = partial(plot_variants, summary_rows, run_dir / name, metric, protocol)
            if any(r["metric"] == metric for r in versus_none):
                name = f"variants_{metric}_diff{suffix}.png"
                jobs[name] = partial(plot_difference_heatmap, versus_none, run_dir / name, metric, protocol)
    jobs["per_speaker.png"] = partial(plot_per_speaker, speaker_rows, run_dir / "per_speaker.png",
                                      protocol=protocols[0])
    drawn = dict(run_forked(jobs, workers))
    return {name: drawn[name] for name in jobs}


def _content_files(run_dir: Path, records: Sequence[dict], name: str) -> list[tuple[str, str]]:
    """``content.csv`` and ``content.md`` (:mod:`metalearn.report.content`) when the run logged per-query
    records (episodes whose support and query may share a sentence); else none."""
    rows = content_rows(records, read_queries(run_dir))
    if not rows:
        return []
    return [("content.csv", _csv_text(rows, CONTENT_FIELDS)),
            ("content.md", content_markdown(rows, f"Content check: {name}"))]


def reference_of_run(run_dir: str | os.PathLike) -> str:
    """The reference method a run folder's config.yaml names (``report.reference``), else ``finetune``: what
    ``python -m metalearn report`` compares with unless told otherwise."""
    path = Path(run_dir) / "config.yaml"
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, yaml.YAMLError):
        config = None
    report = config.get("report") if isinstance(config, dict) else None
    return str(report.get("reference") or "finetune") if isinstance(report, dict) else "finetune"


def write_report(run_dir: str | os.PathLike, records: Sequence[dict] | None = None, reference: str = "finetune",
                 plots: bool = True, figure_workers: int | None = None) -> dict[str, Path]:
    """Write the report files of ``run_dir`` (from its trial records unless ``records`` is given).

    ``reference`` is the algorithm every other one is compared with (on the same pretune variant); when no
    record has it, comparisons.csv holds the variant-vs-``none`` comparisons only. ``plots=False`` writes the
    tables alone; ``figure_workers``: processes drawing the figures (None: one per CPU; the same bytes with any
    number). Returns {file name: path} of everything written. Raises MetalearnError for a missing folder
    or no records.
    """
    run_dir = Path(run_dir)
    if records is None:
        records = read_trials(run_dir)
    if not records:
        raise MetalearnError(f"{run_dir}: no trial records to report")
    summary_rows = summarize(records)
    speaker_rows = per_speaker(records)
    comparison_rows = comparisons(records, reference)
    skipped = skipped_only(read_skips(run_dir), records)
    name = run_dir.resolve().name
    written = {"trials.csv": write_trials_csv(records, run_dir / "trials.csv")}
    for file, text in (("summary.csv", _csv_text(summary_rows, SUMMARY_FIELDS)),
                       ("per_speaker.csv", _csv_text(speaker_rows, PER_SPEAKER_FIELDS)),
                       ("summary.md", summary_markdown(records, summary_rows, f"Results: {name}", skipped,
                                                       protocol_lines(run_dir) + learned_lines(run_dir))),
                       ("comparisons.csv", _csv_text(comparison_rows, COMPARISON_FIELDS)),
                       ("comparisons.md", comparisons_markdown(comparison_rows, f"Paired comparisons: {name}",
                                                               identical=identical_pairs(records))),
                       *_content_files(run_dir, records, name)):
        write_atomic(run_dir / file, text)
        written[file] = run_dir / file
    if plots:
        written |= _write_plots(run_dir, records, summary_rows, speaker_rows, comparison_rows, figure_workers)
    log.info("report: %d trials, %d summary rows, %d comparisons -> %d files in %s", len(records),
             len(summary_rows), len(comparison_rows), len(written), run_dir)
    return written
