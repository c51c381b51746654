"""The demo's trials scored in this process against side by side in forked workers, one run after the other.

    python experiments/bench_workers.py [--config demo] [--out results/bench_workers.md]

After `make demo` (its pretune variants and embedding caches exist, so each run is its layer choice, trials and
report). Runs ``python -m metalearn run --config demo`` twice into fresh folders: ``workers=1`` (every group
in this process, torch's default threads) and ``workers=0`` (one forked worker per CPU, one thread each,
the default), and prints each run's stages (``timing.json``) and the ratio of their trial stages. Then
checks the numbers: the workers' trials against a ``workers=1`` run with one thread (``OMP_NUM_THREADS=1``),
which they must equal in every value, and counts the trials in which the threads changed a value (MAML and
ANIL meta-train through sums whose order follows the thread count).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_trials import differing, trials  # noqa: E402


def run(config: str, out: Path, workers: int, threads: int | None = None) -> dict:
    """``timing.json`` of one run of ``config`` into ``out``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    subprocess.run([sys.executable, "-m", "metalearn", "run", "--config", config, f"out={out}", f"workers={workers}",
                    "tracking.wandb=false"], check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads((out / "timing.json").read_text())["stages"]


def changed(a: Path, b: Path) -> tuple[int, list[str]]:
    """(trials whose values differ, their algorithms) between two run folders."""
    keys = differing(trials(a), trials(b))
    return len(keys), sorted({k[1] for k in keys})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="demo")
    ap.add_argument("--out", default="results/bench_workers.md")
    args = ap.parse_args()
    cpus = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        here = run(args.config, folder / "here", 1)
        forked = run(args.config, folder / "workers", 0)
        one_thread = run(args.config, folder / "one-thread", 1, threads=1)
        same, _ = changed(folder / "workers", folder / "one-thread")
        moved, which = changed(folder / "here", folder / "workers")
        total = len(trials(folder / "workers"))
    stages = list(here)
    lines = [f"# The {args.config} run's trials: one process against forked workers", "",
             f"`python experiments/bench_workers.py --config {args.config}` on {cpus} CPUs (load average "
             f"{os.getloadavg()[0]:.1f} at the end), after `make demo`: the runs one after the other, each into a "
             f"fresh folder (layer choice, trials, report; W&B off).", "",
             "| stage | workers=1 (s) | workers=0, one per CPU (s) | workers=1, one thread (s) |", "|---|--:|--:|--:|"]
    lines += [f"| {s} | {here[s]:.1f} | {forked[s]:.1f} | {one_thread[s]:.1f} |" for s in stages]
    lines += ["", f"Trials stage: **{here['trials'] / forked['trials']:.2f}x** faster in workers.", "",
              f"Of {total:,} trials, the workers' equal the one-thread run's in all but {same} (must be 0); "
              f"{moved} differ from the default-threads run of one process"
              + (f" ({', '.join(which)}: the threads change the order of their sums)" if moved else "") + "."]
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
