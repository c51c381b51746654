"""The demo's budget: each stage of `make demo` on a fresh clone, timed, with peak memory.

    python experiments/bench_demo.py --clone /tmp/fresh [--repo .] [--out results/bench_demo.md]

As a fresh machine sees it: ``PIP_NO_CACHE_DIR=1 UV_NO_CACHE=1 METALEARN_CACHE=$(mktemp -d)`` before the command
(no wheel cache for pip or uv, the Whisper import included).

Clones ``--repo`` (its committed HEAD) into ``--clone`` (which must not exist), then runs the steps `make demo`
runs, one at a time: install (``make setup``), the corpora (``make corpora``), the manifests, the few-shot run
(``metalearn run --config demo``, whose ``timing.json`` splits it into pre-finetuning and CLAP variants,
embeddings and layer choice, trials, report) and GEmo-CLAP's leave-one-session-out demo. Trials by method are
the sums of the trial records' ``seconds``. Peak RSS is the largest child process's (``ru_maxrss``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

STEPS = [("install", ["make", "setup"]), ("corpora", ["make", "corpora"]), ("manifests", ["make", "manifests"]),
         ("few-shot run", [".venv/bin/python", "-m", "metalearn", "run", "--config", "demo"]),
         ("gemo_demo", [".venv/bin/python", "-m", "metalearn", "run", "--config", "gemo_demo"])]


def run_step(cmd: list[str], cwd: Path, log: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS of any child so far in MiB) of one command, its output appended to ``log``.
    Without PYTHONDONTWRITEBYTECODE, as the Makefile runs `make demo` (``unexport``); the CLI sets its thread and
    malloc settings itself."""
    start = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    with log.open("a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        subprocess.run(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, check=True, env=env)
    return time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def trial_seconds(trials_csv: Path) -> dict[str, float]:
    """Algorithm -> the sum of its trials' seconds."""
    out: dict[str, float] = defaultdict(float)
    with trials_csv.open(newline="") as f:
        for r in csv.DictReader(f):
            out[r["algorithm"]] += float(r["seconds"])
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def report(clone: Path, steps: dict[str, tuple[float, float]], commit: str) -> str:
    timing = json.loads((clone / "results/demo/timing.json").read_text())
    total = sum(s for s, _ in steps.values())
    lines = ["# The demo's budget", "", f"`python experiments/bench_demo.py --clone DIR` on a fresh clone of {commit}, "
             f"{os.cpu_count()} CPUs; `make demo` = these steps in order.", "",
             "| step | seconds | peak RSS so far (MiB) |", "|---|---:|---:|"]
    lines += [f"| {name} | {s:.0f} | {rss:.0f} |" for name, (s, rss) in steps.items()]
    lines += [f"| **total** | **{total:.0f}** ({total / 60:.1f} min) | |", "",
              "The few-shot run's stages (its `timing.json`):", "", "| stage | seconds |", "|---|---:|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in timing["stages"].items()]
    lines += ["", "Trials by method (sum of the records' `seconds`):", "", "| algorithm | seconds |", "|---|---:|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in trial_seconds(clone / "results/demo/trials.csv").items()]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clone", type=Path, required=True, help="a new folder for the fresh clone")
    parser.add_argument("--repo", type=Path, default=Path("."), help="the repository to clone (its HEAD)")
    parser.add_argument("--out", type=Path, default=Path("results/bench_demo.md"))
    args = parser.parse_args()
    if args.clone.exists():
        sys.exit(f"error: {args.clone} exists; bench_demo clones into a new folder")
    subprocess.run(["git", "clone", "--quiet", str(args.repo.resolve()), str(args.clone)], check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=args.clone, capture_output=True, text=True,
                            check=True).stdout.strip()
    log = args.clone / "bench_demo.log"
    steps = {name: run_step(cmd, args.clone, log) for name, cmd in STEPS}
    text = report(args.clone, steps, commit)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
