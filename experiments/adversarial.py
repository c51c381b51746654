"""Adversarial pass (issue 24): attacks on tiny runs, each a real command, classified as right, traceback or silent.

    .venv/bin/python experiments/adversarial.py [--out results/adversarial.md] [--subprocess] [--only SUBSTR]

Everything happens in a temporary folder: the tiny synthetic corpora (``metalearn.data.synth``, preset tiny), the
tiny random Whisper, SimpleShot without meta-training, one tiny pre-finetuned variant, its export, one tiny
tuning. Shared setup is built once; each attack copies what it damages.

An attack runs ``python -m metalearn ...`` (in this process through ``metalearn.cli.main`` with stderr captured
for speed, or as a subprocess with ``--subprocess``; the concurrency attacks always run subprocesses) or an API
call, and its outcome is

- ``right``: the correct result, or a non-zero exit with one clear line naming the file, key or value and what
  was expected (no traceback);
- ``traceback``: a Python traceback in stderr;
- ``silent``: exit 0 with a wrong result (damage not reported, a bad value accepted), or a refusal whose message
  does not name what is wrong (misleading).

A table per class (tried / right / traceback / silent) is printed and written to the Markdown file with the
command, the commit and one row per attack. The exit status is 1 when any attack is not ``right``.

This file parses the options, runs the attacks and writes the report; the harness (``Context``, the outcome
rules, the shared setup) is ``experiments/attacks/harness.py`` and the attacks are one module per class:
``attacks/damage.py``, ``attacks/bad_input.py``, ``attacks/concurrency.py``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from attacks import bad_input, concurrency, damage  # noqa: F401 - importing a class module registers its attacks
from attacks.harness import ATTACKS, CLASSES, Attack, Context, Outcome, setup

ROOT = Path(__file__).resolve().parents[1]
# The order of the run and of the report's rows: the numbered cases of issue 24, then the further attacks of each
# class; within a group, the order of its class module. push_to_hub_with_a_bad_repo_id closes case 6, where it
# stood when every attack lived in this file.
ORDER = [("1", "bad input"), ("2", "bad input"), ("3", "damage"), ("4", "bad input"), ("5", "damage"),
         ("5", "bad input"), ("6", "bad input"), ("6", "damage"), ("6", "concurrency"),
         "push_to_hub_with_a_bad_repo_id", ("", "damage"), ("", "bad input"), ("", "concurrency")]


def registered() -> list[Attack]:
    """Every attack, in ORDER."""
    return sorted(ATTACKS, key=lambda a: ORDER.index(a.name if a.name in ORDER else (a.case, a.klass)))


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True).stdout.strip()


def tally(attacks: list[Attack]) -> list[tuple[str, int, int, int, int]]:
    rows = []
    for klass in CLASSES:
        mine = [a for a in attacks if a.klass == klass and a.outcome]
        if mine:
            rows.append((klass, len(mine), *(sum(a.outcome.outcome == o for a in mine)
                                             for o in ("right", "traceback", "silent"))))
    return rows


def write_markdown(path: Path, attacks: list[Attack], command: str, seconds: float) -> None:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")[:300]

    lines = ["# Adversarial pass (issue 24)", "",
             f"Produced by `{command}` at commit {git('rev-parse', '--short', 'HEAD')}"
             f"{' (dirty tree)' if git('status', '--porcelain', '--untracked-files=no') else ''}, "
             f"{seconds / 60:.1f} min on {os.cpu_count()} cores.", "",
             "Outcomes: `right` (the correct result, or one line naming the file, key or value and what was expected, "
             "non-zero exit, no traceback), `traceback`, `silent` (exit 0 with a wrong result, or a refusal that does "
             "not name what is wrong). Case: the numbered case of issue 24 the attack repeats.", "",
             "| class | tried | right | traceback | silent |", "|---|---:|---:|---:|---:|"]
    rows = tally(attacks)
    lines += [f"| {k} | {t} | {r} | {tb} | {s} |" for k, t, r, tb, s in rows]
    total = [sum(x[i] for x in rows) for i in range(1, 5)]
    lines += [f"| all | {total[0]} | {total[1]} | {total[2]} | {total[3]} |", "",
              "| attack | class | case | outcome | first line of the message |", "|---|---|---|---|---|"]
    for a in attacks:
        if a.outcome:
            lines.append(f"| {a.name} | {a.klass} | {a.case} | {a.outcome.outcome} | {cell(a.outcome.message)} |")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results/adversarial.md")
    parser.add_argument("--subprocess", action="store_true", help="every command as its own python -m metalearn")
    parser.add_argument("--only", help="run only attacks whose name contains this")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    args = parser.parse_args()
    command = "python experiments/adversarial.py" + " ".join(
        ["", *(["--subprocess"] if args.subprocess else []), *([f"--only {args.only}"] if args.only else [])])
    start = time.perf_counter()
    base = Path(tempfile.mkdtemp(prefix="adversarial-"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYTHONPATH=str(ROOT), PYTHONPYCACHEPREFIX=str(base / "pycache"), OMP_NUM_THREADS="1",
               HF_HUB_OFFLINE="1", WANDB_MODE="disabled")
    os.environ.update(HF_HUB_OFFLINE="1", WANDB_MODE="disabled")
    import torch

    torch.set_num_threads(1)  # tiny tensors: intra-op threads only add synchronisation
    ctx = Context(base, args.subprocess, env)
    attacks = [a for a in registered() if not args.only or args.only in a.name]
    try:
        print(f"setup in {base} ...", flush=True)
        setup(ctx)
        print(f"setup: {time.perf_counter() - start:.0f} s", flush=True)
        for a in attacks:
            t = time.perf_counter()
            try:
                a.outcome = a.fn(ctx)
            except Exception as e:  # noqa: BLE001 - a broken attack is reported, never hides the others
                a.outcome = Outcome("traceback", f"(the attack itself failed) {type(e).__name__}: {e}")
            a.seconds = time.perf_counter() - t
            print(f"{a.outcome.outcome:9} {a.seconds:5.1f}s {a.klass:11} {a.name}: {a.outcome.message[:160]}",
                  flush=True)
    finally:
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    seconds = time.perf_counter() - start
    print(f"\n{'class':12} {'tried':>5} {'right':>5} {'traceback':>9} {'silent':>6}")
    for k, t, r, tb, s in tally(attacks):
        print(f"{k:12} {t:5} {r:5} {tb:9} {s:6}")
    print(f"{seconds / 60:.1f} min")
    if not args.only:
        write_markdown(args.out, attacks, command, seconds)
        print(f"wrote {args.out}")
    return 0 if all(a.outcome and a.outcome.outcome == "right" for a in attacks) else 1


if __name__ == "__main__":
    sys.exit(main())
