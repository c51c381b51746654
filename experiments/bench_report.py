"""Benchmark: the report on Paper A's 33,600 records (16 variants x 2,100 binary trials of plain fine-tuning).

    python experiments/bench_report.py [--out results/bench_report.md]

Synthetic records in Paper A's shape (20 speakers x 5 targets x 7 k x 3 repetitions per variant, seeded
metrics), written as trials.csv; then, timed one after the other: reading trials.csv, the speaker-clustered
summary, the paired comparisons (every variant against none, Holm over all rows of a metric), and the whole
report (`write_report`: tables, comparisons, plots) with and without its figures.
"""

from __future__ import annotations

import argparse
import os
import tempfile
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


def paper_a_records(variants: int = 16, speakers: int = 20, repetitions: int = 3, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    records = []
    for v in range(variants):
        pretune = "none" if v == 0 else f"pft-{v:02d}"
        for s in range(speakers):
            for target in TARGETS:
                for k in KS:
                    for r in range(repetitions):
                        acc = float(np.clip(0.8 + 0.002 * v + 0.001 * k + rng.normal(0, 0.05), 0, 1))
                        values = {"run": "bench", "pretune": pretune, "algorithm": "full_finetune",
                                  "protocol": "binary", "k": k, "speaker": f"{s:04d}", "target_emotion": target,
                                  "seed": 0, "meta_seed": 0, "accuracy": acc, "macro_f1": acc - 0.3,
                                  "weighted_f1": acc - 0.1, "uar": acc - 0.2, "n_support": k, "n_query": 150,
                                  "seconds": 1.0, "episode_id": f"binary/k{k}/{s:04d}/{target}/r{r}",
                                  "repetition": r, "ways": 2}
                        records.append({f: values[f] for f in RECORD_FIELDS})
    return records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/bench_report.md")
    args = ap.parse_args()
    records = paper_a_records()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_trials_csv(records, folder / "trials.csv")
        for name, work in (("read trials.csv", lambda: read_trials_csv(folder / "trials.csv")),
                           ("summary (per-speaker means, t-intervals)", lambda: summarize(records)),
                           ("paired comparisons (Holm)", lambda: comparisons(records)),
                           ("write_report without figures", lambda: write_report(folder, records, plots=False)),
                           ("write_report with figures", lambda: write_report(folder, records))):
            start = time.perf_counter()
            work()
            rows.append((name, time.perf_counter() - start))
    lines = ["# The report on Paper A's 33,600 records", "",
             f"`python experiments/bench_report.py` on {os.cpu_count()} CPUs (load average "
             f"{os.getloadavg()[0]:.1f}); {len(records):,} records, 16 variants.", "",
             "| step | seconds |", "|---|---|"] + [f"| {n} | {s:.2f} |" for n, s in rows]
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
