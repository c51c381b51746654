"""Benchmark: OpenMP's wait policy, thread count and malloc settings for meta-training, quiet and busy.

    python experiments/bench_threads.py [--busy 2] [--steps 30] [--algorithms maml,reptile]

Each setting runs in a fresh subprocess (the wait policy is read once, when torch loads its OpenMP runtime):
1 thread; 2 threads with libgomp's default (idle threads spin a while at barriers, then sleep), always
spinning (ACTIVE), never spinning (PASSIVE), and a short spin (GOMP_SPINCOUNT); then 1 thread and the
short spin with glibc's malloc keeping freed multi-MiB blocks (``MALLOC_MMAP_THRESHOLD_`` 32 MiB,
``MALLOC_TRIM_THRESHOLD_`` 256 MiB: what ``python -m metalearn`` and the Makefile set). The work is the demo's
meta-training: 5-way, 5-shot tasks of 512-d features from 4 speakers, MLP head 512-256-5, ``--steps``
meta-steps. Then the same again while ``--busy`` processes burn a core each (a machine shared with another
job: CI beside a demo, two users). Writes results/bench_threads.md; compare the ratios within one run.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

from metalearn.cli import MMAP_THRESHOLD, TRIM_THRESHOLD

SETTINGS = (("1 thread", 1, {}), ("2 threads, OpenMP's default (spin a while, then sleep)", 2, {}),
            ("2 threads, OMP_WAIT_POLICY=ACTIVE (spin)", 2, {"OMP_WAIT_POLICY": "ACTIVE"}),
            ("2 threads, OMP_WAIT_POLICY=PASSIVE (sleep)", 2, {"OMP_WAIT_POLICY": "PASSIVE"}),
            ("2 threads, GOMP_SPINCOUNT=10000", 2, {"GOMP_SPINCOUNT": "10000"}))
MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD), "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD)}
SETTINGS += (("1 thread, malloc keeps freed blocks", 1, MALLOC),
             ("2 threads, GOMP_SPINCOUNT=10000, malloc keeps freed blocks (the CLI's settings)", 2,
              {"GOMP_SPINCOUNT": "10000", **MALLOC}))

CHILD = r"""
import sys, time, numpy as np, torch
from metalearn.fewshot.algorithms import AdapterSpec, build_adapter
from metalearn.fewshot.tasks import SpeakerTaskSampler, TaskRows, TaskSpec
torch.set_num_threads(int(sys.argv[1]))
steps, out = int(sys.argv[2]), []
gen = torch.Generator().manual_seed(0)
x = torch.randn(1000, 512, generator=gen)
emotions = ["neutral", "happy", "angry", "sad", "surprise"]
labels = [emotions[i % 5] for i in range(1000)]
speakers = [f"s{(i // 5) % 4}" for i in range(1000)]
for name in sys.argv[3].split(","):
    sampler = SpeakerTaskSampler(x, TaskRows(labels, speakers), sorted(set(speakers)), TaskSpec(5, 5, 5), 1, "cpu")
    adapter = build_adapter(name, AdapterSpec(512, 5, 0), {"hidden": [256], "meta_batch": 8})
    start = time.perf_counter()
    adapter.meta_train(sampler, steps)
    out.append(f"{name}={time.perf_counter() - start:.3f}")
print(" ".join(out))
"""


def burn() -> None:
    while True:
        pass


def run(threads: int, settings: dict[str, str], steps: int, algorithms: str) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", *MALLOC)} | settings
    done = subprocess.run([sys.executable, "-c", CHILD, str(threads), str(steps), algorithms], env=env,
                          capture_output=True, text=True, check=True)
    last = done.stdout.strip().splitlines()[-1]
    return {k: float(v) for k, v in (item.split("=") for item in last.split())}


def table(busy: int, steps: int, algorithms: str) -> list[str]:
    burners = [mp.Process(target=burn, daemon=True) for _ in range(busy)]
    for b in burners:
        b.start()
    try:
        results = [(label, run(threads, env, steps, algorithms)) for label, threads, env in SETTINGS]
    finally:
        for b in burners:
            b.terminate()
    names = algorithms.split(",")
    base = results[0][1]
    lines = [f"**{'quiet machine' if not busy else f'{busy} busy processes beside it'}** "
             f"(load average before: {os.getloadavg()[0]:.1f})", "",
             "| setting | " + " | ".join(f"{n} (s, x 1 thread)" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for label, times in results:
        lines.append(f"| {label} | " + " | ".join(f"{times[n]:.2f} ({times[n] / base[n]:.1f}x)" for n in names)
                     + " |")
    return lines + [""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--busy", type=int, default=2, help="processes burning a core each, for the second table")
    ap.add_argument("--steps", type=int, default=30, help="meta-training steps per algorithm")
    ap.add_argument("--algorithms", default="maml,reptile")
    ap.add_argument("--out", default="results/bench_threads.md")
    args = ap.parse_args()
    start = time.time()
    lines = ["# OpenMP wait policy, threads and malloc settings for meta-training", "",
             f"`python experiments/bench_threads.py --busy {args.busy} --steps {args.steps} --algorithms "
             f"{args.algorithms}` on {os.cpu_count()} CPUs; seconds for {args.steps} meta-steps (demo shapes).", ""]
    lines += table(0, args.steps, args.algorithms)
    if args.busy:
        lines += table(args.busy, args.steps, args.algorithms)
    lines.append(f"Total {time.time() - start:.0f} s.")
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
