"""Concurrency attacks: two commands on one folder at once, or one command on a folder another holds (always as
subprocesses)."""

from __future__ import annotations

import contextlib
import csv
import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .harness import Context, Outcome, Result, attack, either, first_traceback_line, refused

HOLD = ("import sys, time\nfrom metalearn.util.lock import run_lock\nfrom metalearn.tune.folder import tune_lock\n"
        "lock = run_lock(sys.argv[1]) if sys.argv[2] == 'run' else tune_lock(sys.argv[1])\n"
        "with lock:\n    print('held', flush=True)\n    time.sleep(120)\n")


def hold_lock(ctx: Context, out: Path, kind: str) -> subprocess.Popen:
    p = ctx.python(HOLD, str(out), kind)
    assert p.stdout is not None and p.stdout.readline().strip() == "held", p.stderr.read() if p.stderr else ""
    return p


def release(p: subprocess.Popen) -> None:
    p.send_signal(signal.SIGKILL)
    p.wait()


@contextlib.contextmanager
def holding(holder: subprocess.Popen) -> Iterator[None]:
    """The body runs while ``holder`` (:func:`hold_lock`, :func:`hold_lock_shard`) holds its lock; released after."""
    try:
        yield
    finally:
        release(holder)


def _both(ctx: Context, a: list[str], b: list[str], delay: float = 0.0) -> tuple[Result, Result]:
    pa = ctx.popen(*a)
    time.sleep(delay)
    pb = ctx.popen(*b)
    ra, rb = [Result(p.wait(600), *p.communicate(), list(map(str, x))) for p, x in ((pa, a), (pb, b))]
    return ra, rb


def one_refused(ra: Result, rb: Result, check: Callable[[], str | None], *needles: str) -> Outcome:
    for r in (ra, rb):
        if r.traceback:
            return Outcome("traceback", first_traceback_line(r))
    codes = sorted([ra.rc, rb.rc])
    if codes == [0, 0] or codes[0] == 0:
        wrong = check()
        if wrong:
            return Outcome("silent", wrong)
        if codes == [0, 0]:
            return Outcome("right", "both finished with the right result")
        refusal = refused(rb if rb.rc else ra, *needles)
        return refusal
    return Outcome("silent", f"both failed: {ra.error_line()} / {rb.error_line()}")


# ==============================================================================================================
# Case 6: misleading results
# ==============================================================================================================


@attack("concurrency", "6")
def tune_while_a_run_holds_the_folder(ctx: Context) -> Outcome:
    out = ctx.base / "c6-locked"
    with holding(hold_lock(ctx, out, "run")):
        r = ctx.sub(*ctx.tune_args(out))
    o = refused(r, "in use")
    if o.outcome == "right" and (out / "tuning").exists():
        return Outcome("silent", f"refused after writing tuning/: {o.message}")
    return o


# ==============================================================================================================
# Further concurrency
# ==============================================================================================================


@attack("concurrency")
def two_runs_into_one_folder(ctx: Context) -> Outcome:
    out = ctx.base / "x-two-runs"
    args = ctx.run_args(out)
    ra, rb = _both(ctx, args, args, delay=1.0)
    return one_refused(ra, rb, lambda: ctx.same_as_ref(out), "in use")


@attack("concurrency")
def the_same_shard_twice(ctx: Context) -> Outcome:
    out = ctx.base / "x-shards"
    args = ctx.run_args(out)
    prep = ctx.cli(*args, "--prepare")
    if prep.rc != 0:
        return refused(prep)
    with holding(hold_lock_shard(ctx, out, 0, 2)):
        r = ctx.sub(*args, "--shard", "1/2")
    return refused(r, "in use", "1/2")


def hold_lock_shard(ctx: Context, out: Path, index: int, count: int) -> subprocess.Popen:
    code = ("import sys, time\nfrom metalearn.util.lock import run_lock\n"
            "with run_lock(sys.argv[1], (int(sys.argv[2]), int(sys.argv[3]))):\n    print('held', flush=True)\n"
            "    time.sleep(120)\n")
    p = ctx.python(code, str(out), str(index), str(count))
    assert p.stdout is not None and p.stdout.readline().strip() == "held"
    return p


@attack("concurrency")
def unsharded_run_while_a_shard_runs(ctx: Context) -> Outcome:
    out = ctx.base / "x-shard-vs-all"
    with holding(hold_lock_shard(ctx, out, 1, 2)):
        r = ctx.sub(*ctx.run_args(out))
    return refused(r, "in use", "2/2")


@attack("concurrency")
def run_while_a_tune_holds_the_folder(ctx: Context) -> Outcome:
    out = ctx.base / "x-tune-held"
    with holding(hold_lock(ctx, out, "tune")):
        r = ctx.sub(*ctx.run_args(out))
    return refused(r, "in use")


@attack("concurrency")
def merge_into_a_folder_a_run_holds(ctx: Context) -> Outcome:
    out = ctx.base / "x-merge-held"
    with holding(hold_lock(ctx, out, "run")):
        r = ctx.sub("merge", out, ctx.base / "ref")
    return refused(r, "in use")


@attack("concurrency")
def two_pretunes_into_one_folder(ctx: Context) -> Outcome:
    out = ctx.base / "x-pft"
    args = [str(a) for a in ctx.pretune_args(out)]
    ra, rb = _both(ctx, args, args, delay=1.0)

    def check() -> str | None:
        done = out / "pft-iemocap/done.json"
        return None if done.exists() and json.loads(done.read_text()) else "no finished variant"
    return one_refused(ra, rb, check, "in use")


@attack("concurrency")
def two_exports_into_one_folder(ctx: Context) -> Outcome:
    out = ctx.base / "x-export"
    args = ["export-variant", str(ctx.base / "pft/pft-iemocap"), str(out)]
    ra, rb = _both(ctx, args, args)

    def check() -> str | None:
        from metalearn.util.fileio import sha256_file

        sums = json.loads((out / "sha256.json").read_text())["sha256"]
        bad = [n for n, s in sums.items() if sha256_file(out / n) != s]
        return f"export files do not match sha256.json: {bad}" if bad else None
    return one_refused(ra, rb, check, "in use")


@attack("concurrency")
def two_tunes_share_a_study(ctx: Context) -> Outcome:
    out = ctx.base / "x-tunes"
    args = [str(a) for a in ctx.tune_args(out)]
    ra, rb = _both(ctx, args, args, delay=0.5)

    def check() -> str | None:
        def counted(path: Path) -> int:  # a racing worker's extra trial is recorded, but only the first N count
            with open(path, newline="") as f:
                return sum(row["counted"] == "True" for row in csv.DictReader(f))
        rows, ref = counted(out / "tuning/finetune.csv"), counted(ctx.base / "tuned/tuning/finetune.csv")
        return None if rows == ref else f"{rows} counted tuning trials, not {ref}"
    return one_refused(ra, rb, check, "in use")


@attack("concurrency")
def report_while_a_run_holds_the_folder(ctx: Context) -> Outcome:
    out = ctx.copy("ref", "x-report-held")
    with holding(hold_lock(ctx, out, "run")):
        r = ctx.sub("report", out)
    return either(r, ("in use",), lambda: None)
