"""Benchmark: the report on Paper A's 33,600 records (16 variants x 2,100 binary trials of full fine-tuning).

    python experiments/bench_report.py [--out results/bench_report.md] [--figures runs/bench_report]

Synthetic records in Paper A's shape (20 speakers x 5 targets x 7 k x 3 repetitions per variant; the 16
variants are every subset of Paper A's four pre-finetuning corpora, named as ``metalearn.pretune`` names them;
seeded metrics with a speaker effect and a variant effect that grows with the number of corpora and fades with
k), plus the ``majority`` baseline's 2,100 trials on ``none`` (1 positive : 4 negatives, 80% accuracy), written
as trials.csv; then, timed one after the other: reading trials.csv, the speaker-clustered summary, the paired
comparisons (every variant against none, Holm over all rows of a metric), and the whole report (`write_report`:
tables, comparisons, plots) without its figures, with them drawn one after another and with them drawn by one
worker process per CPU (the default), in wall and CPU seconds (this process's and its workers'; CPU seconds stay
comparable on a shared machine). The report stays in ``--figures``: look at
``variants_accuracy_vs_k.png`` (the variants on one axis) and ``variants_accuracy_diff.png`` (the variant x k
map of the paired difference to none).
"""

from __future__ import annotations

import argparse
import itertools
import os
import resource
import time
from pathlib import Path

import numpy as np

from metalearn.fewshot.trials import RECORD_FIELDS
from metalearn.report.compare import comparisons
from metalearn.report.records import read_trials_csv, write_trials_csv
from metalearn.report.summary import summarize
from metalearn.report.tables import write_report

KS = (2, 4, 8, 16, 24, 32, 64)
TARGETS = ("angry", "happy", "neutral", "sad", "surprise")
CORPORA = ("iemocap", "mandarin_affective", "msp_improv", "msp_podcast")
GAIN = {"iemocap": 0.012, "mandarin_affective": -0.004, "msp_improv": 0.006, "msp_podcast": 0.018}  # mock effects


def variants() -> list[tuple[str, tuple[str, ...]]]:
    """(name, corpora) of every subset of :data:`CORPORA`: ``none``, then ``pft-`` + the sorted names."""
    subsets = [c for n in range(len(CORPORA) + 1) for c in itertools.combinations(CORPORA, n)]
    return [("none" if not c else "pft-" + "+".join(sorted(c)), c) for c in subsets]


def _record(pretune: str, algorithm: str, s: int, target: str, k: int, r: int, acc: float, f1: float) -> dict:
    values = {"run": "bench", "pretune": pretune, "algorithm": algorithm, "protocol": "binary", "k": k,
              "speaker": f"{s + 1:04d}", "target_emotion": target, "seed": 0, "meta_seed": 0, "layer": "12",
              "features_of": pretune, "accuracy": acc, "macro_f1": f1, "weighted_f1": acc - 0.05, "uar": f1,
              "n_support": k, "n_query": 150, "seconds": 1.0, "episode_id": f"binary/k{k}/{s + 1:04d}/{target}/r{r}",
              "repetition": r, "ways": 2}
    return {f: values.get(f) for f in RECORD_FIELDS}


def paper_a_records(speakers: int = 20, repetitions: int = 3, seed: int = 0, majority: bool = True) -> list[dict]:
    """Full fine-tuning on every variant (16 x 2,100 records), and the majority baseline on ``none``."""
    rng = np.random.default_rng(seed)
    speaker_effect = rng.normal(0, 0.03, speakers)
    records = []
    for pretune, corpora in variants():
        gain = sum(GAIN[c] for c in corpora) + 0.004 * len(corpora)
        for s, target, k, r in itertools.product(range(speakers), TARGETS, KS, range(repetitions)):
            mean = 0.80 + 0.12 * (1 - np.exp(-k / 12)) + gain * np.exp(-k / 24) + speaker_effect[s]
            acc = float(np.clip(mean + rng.normal(0, 0.05), 0, 1))
            records.append(_record(pretune, "full_finetune", s, target, k, r, acc, float(np.clip(acc - 0.15, 0, 1))))
    if majority:
        for s, target, k, r in itertools.product(range(speakers), TARGETS, KS, range(repetitions)):
            records.append(_record("none", "majority", s, target, k, r, 0.8, 0.8 / 1.8))
    return records


def track(folder: Path, records: list[dict]) -> None:
    """The report's W&B mirror, offline: every trial row as an Artifact table (a history table would keep 10,000;
    tests/test_tracking.py reads 33,600 rows back from such a run) and one line chart per variant."""
    from metalearn.fewshot.trials import RECORD_FIELDS
    from metalearn.report.tracking import Tracker, TrackingConfig

    with Tracker(folder, "bench_report", {}, TrackingConfig(mode="offline")) as tracker:
        tracker.log_table("trials", records, RECORD_FIELDS, folder / "trials.csv")
        tracker.log_line_charts(summarize(records))


def cpu_seconds() -> float:
    """CPU seconds of this process and its ended children (the figures' workers)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/bench_report.md")
    ap.add_argument("--figures", default="runs/bench_report", help="folder for the report (kept)")
    args = ap.parse_args()
    records = paper_a_records()
    n_main = sum(r["algorithm"] != "majority" for r in records)
    folder = Path(args.figures)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    write_trials_csv(records, folder / "trials.csv")
    rows, written = [], {}
    for name, work in (("read trials.csv", lambda: read_trials_csv(folder / "trials.csv")),
                       ("summary (per-speaker means, t-intervals)", lambda: summarize(records)),
                       ("paired comparisons (Holm)", lambda: comparisons(records)),
                       ("write_report without figures", lambda: write_report(folder, records, plots=False)),
                       ("write_report with figures drawn one after another",
                        lambda: write_report(folder, records, figure_workers=1)),
                       ("write_report with figures, one worker per CPU (the default)",
                        lambda: written.update(write_report(folder, records))),
                       ("W&B offline run (trials Artifact, line charts)", lambda: track(folder, records))):
        start, cpu = time.perf_counter(), cpu_seconds()
        work()
        rows.append((name, time.perf_counter() - start, cpu_seconds() - cpu))
    figures = sorted(n for n in written if n.endswith(".png"))
    lines = ["# The report on Paper A's 33,600 records", "",
             f"`python experiments/bench_report.py` on {os.cpu_count()} CPUs (load average "
             f"{os.getloadavg()[0]:.1f}); {n_main:,} full_finetune records (16 variants) and "
             f"{len(records) - n_main:,} majority records on none.", "",
             "| step | seconds | CPU seconds |", "|---|--:|--:|"] + [f"| {n} | {s:.2f} | {c:.2f} |" for n, s, c in rows]
    lines += ["", f"Figures ({len(figures)}, in `{folder}`): " + ", ".join(f"`{n}`" for n in figures) + "."]
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
