"""Compare two run folders' trials (e.g. the same commit's `make demo` on two machines, or before and after a
refactor): trials keyed by (pretune, algorithm, episode_id, seed, meta_seed), their values, and which report
files are byte-identical.

    python experiments/compare_trials.py RUN_A RUN_B      # e.g. /tmp/before/results/demo results/demo
"""

from __future__ import annotations

import argparse
import csv
import filecmp
from pathlib import Path

VALUES = ("accuracy", "macro_f1", "weighted_f1", "uar", "n_support", "n_query", "k", "speaker", "protocol")
FILES = ("summary.csv", "comparisons.csv", "per_speaker.csv", "layers.json", "folds.json", "summary.md",
         "comparisons.md", "layers.md")


def trials(folder: Path) -> dict[tuple, dict]:
    with open(folder / "trials.csv", newline="", encoding="utf-8") as f:
        return {(r["pretune"], r["algorithm"], r["episode_id"], r["seed"], r.get("meta_seed", "0")): r
                for r in csv.DictReader(f)}


def differing(a: dict[tuple, dict], b: dict[tuple, dict]) -> list[tuple]:
    """The keys of the trials in both ``a`` and ``b`` (:func:`trials`) whose values differ, sorted."""
    return sorted(k for k in a.keys() & b.keys() if any(a[k][f] != b[k][f] for f in VALUES))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    args = parser.parse_args(argv)
    a, b = trials(args.a), trials(args.b)
    differ = differing(a, b)
    print(f"trials: {len(a)} and {len(b)}; only in one: {len(a.keys() ^ b.keys())}; values differ: {len(differ)}")
    if differ:
        print("  algorithms:", ", ".join(sorted({k[1] for k in differ})), "| first:", differ[0])
    for name in FILES:
        if (args.a / name).is_file() and (args.b / name).is_file():
            same = filecmp.cmp(args.a / name, args.b / name, shallow=False)
            print(f"{name}: {'identical' if same else 'different'}")
    return 1 if differ or a.keys() != b.keys() else 0


if __name__ == "__main__":
    raise SystemExit(main())
