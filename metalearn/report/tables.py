"""``python -m metalearn report RUN_DIR``: tables and figures of a run's trial records.

:func:`write_report` reads the records of a run folder (``trials*.jsonl``, else ``trials.csv``) and writes,
next to them and atomically: ``trials.csv``, ``summary.csv`` (mean and 95% t-interval per pretune,
algorithm, protocol and k), ``per_speaker.csv``, ``summary.md`` (paper-ready Markdown tables) and the
PNG figures of :mod:`metalearn.report.plots`. Same records, byte-identical CSV and Markdown files.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from metalearn.report.records import read_trials, write_trials_csv
from metalearn.report.summary import SUMMARY_FIELDS, summarize
from metalearn.util.errors import MetalearnError
from metalearn.util.fileio import write_atomic
from metalearn.util.metrics import mean_ci95

log = logging.getLogger(__name__)

METRICS = ("accuracy", "macro_f1", "uar")
METRIC_NAMES = {"accuracy": "Accuracy", "macro_f1": "Macro-F1", "uar": "UAR"}
PER_SPEAKER_FIELDS = ("pretune", "algorithm", "protocol", "k", "speaker", "n_trials", "accuracy_mean",
                      "accuracy_ci95", "macro_f1_mean", "macro_f1_ci95", "uar_mean", "uar_ci95")


def per_speaker(records: Iterable[dict]) -> list[dict]:
    """Mean and 95% t-interval of accuracy, macro-F1 and UAR per (pretune, algorithm, protocol, k, speaker)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["pretune"], r["algorithm"], r["protocol"], int(r["k"]), str(r["speaker"]))].append(r)
    rows = []
    for key, rs in sorted(groups.items()):
        row = dict(zip(PER_SPEAKER_FIELDS[:5], key, strict=True)) | {"n_trials": len(rs)}
        for m in METRICS:
            row[f"{m}_mean"], row[f"{m}_ci95"], _ = mean_ci95([float(r[m]) for r in rs])
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
    lines = ["| Pretune | Algorithm | " + " | ".join(f"k = {k}" for k in ks) + " |",
             "|:--|:--|" + "--:|" * len(ks)]
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
        name = [s.replace("|", "\\|") for s in (pretune, algorithm)]
        lines.append(f"| {name[0]} | {name[1]} | " + " | ".join(cells) + " |")
    return lines


def _chance_text(records: Sequence[dict]) -> str:
    ways = sorted({int(r["ways"]) for r in records if int(r.get("ways") or 0) > 0})
    if not ways:
        return "chance level unknown (no ways in the records)"
    if len(ways) == 1:
        return f"chance level (1/ways) {_pct(1 / ways[0])}% ({ways[0]} ways)"
    return f"chance level (1/ways) {_pct(1 / ways[-1])}–{_pct(1 / ways[0])}% ({ways[0]}–{ways[-1]} ways)"


def summary_markdown(records: Sequence[dict], summary_rows: Sequence[dict], title: str) -> str:
    """The ``summary.md`` text: per protocol, one table per metric (accuracy, macro-F1, UAR)."""
    lines = [f"# {title}", "", f"{len(records)} trials; " + ", ".join(
        f"{p}: {sum(r['protocol'] == p for r in records)}" for p in protocols_by_size(records)) + ".", ""]
    for protocol in protocols_by_size(records):
        recs = [r for r in records if r["protocol"] == protocol]
        rows = [r for r in summary_rows if r["protocol"] == protocol]
        n_speakers = len({str(r["speaker"]) for r in recs})
        lines += [f"## {protocol} protocol", "", f"{len(recs)} trials, {n_speakers} speakers.", ""]
        for metric in METRICS:
            lines += [f"### {METRIC_NAMES[metric]} (%)", "", *_markdown_table(rows, metric), ""]
            lines += [f"Cells: mean ± 95% t-interval half-width over n = {_range(r['n_trials'] for r in rows)} "
                      f"trials (episodes) per cell, in percent; best mean per column in bold; "
                      f"{_chance_text(recs)}.", ""]
    return "\n".join(lines)


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


def _write_plots(run_dir: Path, records: Sequence[dict], summary_rows: Sequence[dict],
                 speaker_rows: Sequence[dict]) -> dict[str, Path]:
    from metalearn.report.plots import plot_metric_vs_k, plot_per_speaker

    written = {}
    protocols = protocols_by_size(records)
    for i, protocol in enumerate(protocols):
        chance = chance_level(r for r in records if r["protocol"] == protocol)
        for metric in METRICS:
            name = f"{metric}_vs_k.png" if i == 0 else f"{metric}_vs_k_{protocol}.png"
            written[name] = plot_metric_vs_k(summary_rows, metric, run_dir / name, chance=chance, protocol=protocol)
    written["per_speaker.png"] = plot_per_speaker(speaker_rows, run_dir / "per_speaker.png", protocol=protocols[0])
    return written


def write_report(run_dir: str | os.PathLike, records: Sequence[dict] | None = None) -> dict[str, Path]:
    """Write the report files of ``run_dir`` (from its trial records unless ``records`` is given).

    Returns {file name: path} of everything written. Raises MetalearnError for a missing folder or no records.
    """
    run_dir = Path(run_dir)
    if records is None:
        records = read_trials(run_dir)
    if not records:
        raise MetalearnError(f"{run_dir}: no trial records to report")
    summary_rows = summarize(records)
    speaker_rows = per_speaker(records)
    written = {"trials.csv": write_trials_csv(records, run_dir / "trials.csv")}
    for name, text in (("summary.csv", _csv_text(summary_rows, SUMMARY_FIELDS)),
                       ("per_speaker.csv", _csv_text(speaker_rows, PER_SPEAKER_FIELDS)),
                       ("summary.md", summary_markdown(records, summary_rows, f"Results: {run_dir.resolve().name}"))):
        write_atomic(run_dir / name, text)
        written[name] = run_dir / name
    written |= _write_plots(run_dir, records, summary_rows, speaker_rows)
    log.info("report: %d trials, %d summary rows -> %d files in %s", len(records), len(summary_rows),
             len(written), run_dir)
    return written


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``report`` subcommand on ``subparsers``."""
    p = subparsers.add_parser("report", help="tables (CSV, Markdown) and figures of a run's trial records")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder holding trials*.jsonl or trials.csv")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Write the report of ``args.run_dir``; print the accuracy table and the files written."""
    records = read_trials(args.run_dir)
    written = write_report(args.run_dir, records)
    print(summary_table(summarize(records), "accuracy"))
    print()
    print("wrote:")
    for path in written.values():
        print(f"  {path}")
    return 0
