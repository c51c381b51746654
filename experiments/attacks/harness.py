"""The adversarial pass's harness: the registry of attacks, the classification of an outcome (right, traceback,
silent), the Context that runs commands over the tiny configs, and the shared setup."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import subprocess
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CLASSES = ("damage", "bad input", "concurrency")
PFT_RECIPE = ["lr=1e-3", "batch_size=4", "grad_accum=1", "max_epochs=1", "patience=1", "max_seconds=0.5",
              "steps_per_epoch=1", "eval_batch_size=8", "num_workers=0", "device=cpu", "trainable_layers=1"]


@dataclass
class Result:
    """What a command did: its exit status and its output."""

    rc: int
    out: str
    err: str
    argv: list[str]

    @property
    def traceback(self) -> bool:
        return "Traceback (most recent call last)" in self.err

    def error_line(self) -> str:
        """The one line a refusal printed ("error: ..."), else stderr's last non-empty line."""
        lines = [x for x in self.err.splitlines() if x.strip()]
        errors = [x for x in lines if x.startswith("error:") or "error:" in x[:40]]
        return (errors or lines or [""])[-1]

    def warnings(self) -> list[str]:
        return [x for x in self.err.splitlines() if x.startswith("WARNING")]


@dataclass
class Outcome:
    outcome: str  # right, traceback or silent
    message: str


@dataclass
class Attack:
    name: str
    klass: str
    case: str  # the numbered case, or "" for a further one
    fn: Callable[[Context], Outcome]
    outcome: Outcome | None = None
    seconds: float = 0.0


ATTACKS: list[Attack] = []


def attack(klass: str, case: str = ""):
    def register(fn):
        ATTACKS.append(Attack(fn.__name__, klass, case, fn))
        return fn
    return register


# -- classifying ---------------------------------------------------------------------------------------------


def first_traceback_line(r: Result) -> str:
    lines = [x for x in r.err.splitlines() if x.strip()]
    return lines[-1] if lines else "traceback"


def refused(r: Result, *needles: str) -> Outcome:
    """Right: a non-zero exit with one error line that names every one of ``needles``."""
    if r.traceback:
        return Outcome("traceback", first_traceback_line(r))
    if r.rc == 0:
        return Outcome("silent", f"accepted (rc 0): {r.error_line() or r.out.strip().splitlines()[-1:]}")
    line = r.error_line()
    missing = [n for n in needles if n.lower() not in line.lower()]
    if missing:
        return Outcome("silent", f"refused (rc {r.rc}) without naming {missing}: {line}")
    return Outcome("right", line)


def accepted(r: Result, check: Callable[[], str | None], warning: tuple[str, ...] = ()) -> Outcome:
    """Right: exit 0, ``check()`` returns None (else the wrong thing it found) and, when ``warning`` is given,
    a warning line names every one of those strings."""
    if r.traceback:
        return Outcome("traceback", first_traceback_line(r))
    if r.rc != 0:
        return Outcome("silent", f"refused (rc {r.rc}) what should be accepted: {r.error_line()}")
    wrong = check()
    if wrong:
        return Outcome("silent", wrong)
    if warning:
        said = [w for w in r.warnings() if all(n.lower() in w.lower() for n in warning)]
        if not said:
            return Outcome("silent", f"no warning naming {list(warning)}")
        return Outcome("right", said[0])
    return Outcome("right", "rc 0, the expected result")


def either(r: Result, needles: tuple[str, ...], check: Callable[[], str | None],
           warning: tuple[str, ...] = ()) -> Outcome:
    """Right: refused naming ``needles``, or accepted with the right result (and the warning)."""
    if r.rc != 0 and not r.traceback:
        return refused(r, *needles)
    return accepted(r, check, warning)


# -- running ---------------------------------------------------------------------------------------------------


@dataclass
class Context:
    base: Path
    subprocess: bool
    env: dict = field(default_factory=dict)
    ref_trials: list[dict] = field(default_factory=list)

    # -- commands

    def cli(self, *argv: str, timeout: float = 600, stdin: str | None = None) -> Result:
        argv = [str(a) for a in argv]
        if self.subprocess:
            return self.sub(*argv, timeout=timeout)
        from metalearn.cli import main

        out, err = io.StringIO(), io.StringIO()
        root = logging.getLogger()
        for handler in list(root.handlers):  # basicConfig binds to the stderr of the call that configures
            root.removeHandler(handler)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(argv)
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:  # noqa: BLE001 - what python -m would print and exit 1 with
                traceback.print_exc(file=err)
                rc = 1
        for handler in list(root.handlers):
            root.removeHandler(handler)
        return Result(rc, out.getvalue(), err.getvalue(), argv)

    def popen(self, *argv: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "metalearn", *map(str, argv)], cwd=self.base,
                                env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def sub(self, *argv: str, timeout: float = 600) -> Result:
        p = subprocess.run([sys.executable, "-m", "metalearn", *map(str, argv)], cwd=self.base, env=self.env,
                           capture_output=True, text=True, timeout=timeout)
        return Result(p.returncode, p.stdout, p.stderr, list(map(str, argv)))

    def python(self, code: str, *args: str) -> subprocess.Popen:
        """A helper process running ``code`` (sys.argv[1:] = args), e.g. one holding a lock."""
        return subprocess.Popen([sys.executable, "-c", code, *args], cwd=self.base, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    # -- tiny configs

    @property
    def preset(self) -> Path:
        return self.base / "tiny.yaml"

    def common(self, out: str | Path, *, target: Path | None = None, manifests: Path | None = None,
               cache: Path | None = None, pretune: Path | None = None) -> list[str]:
        b = self.base
        return [f"out={out if Path(out).is_absolute() else b / out}",
                f"data.manifests_dir={manifests or b / 'manifests'}", f"data.target.root={target or b / 'data/esd'}",
                "backbone.source=tiny", "backbone.family=whisper", f"pretune.out={pretune or b / 'pretune'}",
                "pretune.subsets=[none]", f"embeddings.cache_dir={cache or b / 'cache'}", "episodes.ks=[1,2]",
                "episodes.repetitions=2", "speakers.folds=2", "speakers.validation=1", "seeds=[0]",
                "tracking.wandb=false"]

    def run_args(self, out: str | Path, *extra: str, algorithms: str = "simpleshot", **where) -> list[str]:
        return ["run", "--config", self.preset, *self.common(out, **where), f"algorithms.run=[{algorithms}]",
                *extra]

    def run(self, out: str | Path, *extra: str, **kw) -> Result:
        return self.cli(*self.run_args(out, *extra, **kw))

    def run_over_pft(self, out: str | Path, pft: Path, *extra: str) -> Result:
        """A run whose pretune.out is the folder ``pft`` of a pretune (its pft-iemocap, the same recipe)."""
        return self.run(out, f"pretune.out={pft}", "pretune.subsets=[iemocap]",
                        f"data.sources.iemocap={{corpus: iemocap, root: {self.base / 'data/iemocap'}}}",
                        *[f"pretune.recipe.{x}" for x in PFT_RECIPE], *extra)

    def tune_args(self, out: str | Path, *extra: str) -> list[str]:
        return ["tune", "--config", self.preset, *self.common(out), "episodes.repetitions=1",
                "algorithms.run=[finetune,majority]", "algorithms.finetune.steps=10", "meta_train.steps=3",
                "meta_train.queries=1", "tune.meta_steps=[2,4]", "tune.trials=2", "tune.algorithms=[finetune]",
                *extra]

    def tune(self, out: str | Path, *extra: str) -> Result:
        return self.cli(*self.tune_args(out, *extra))

    def pretune_args(self, out: Path, *extra: str, recipe: tuple[str, ...] = ()) -> list[str]:
        return ["pretune", "--manifests", self.base / "manifests/iemocap.csv", "--out", out, "--subsets", "iemocap",
                "--backbone-source", "tiny", "--backbone-family", "whisper", *extra, "--set", *PFT_RECIPE, *recipe]

    # -- files

    def copy(self, name: str, to: str) -> Path:
        dst = self.base / to
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(self.base / name, dst)
        return dst

    def trials(self, folder: Path) -> list[dict]:
        from metalearn.report.records import VOLATILE, read_trials

        logging.disable(logging.WARNING)
        try:
            return [{k: v for k, v in r.items() if k not in VOLATILE} for r in read_trials(folder)]
        finally:
            logging.disable(logging.NOTSET)

    def same_as_ref(self, folder: Path) -> str | None:
        got = self.trials(folder)
        key = lambda r: json.dumps(r, sort_keys=True)  # noqa: E731
        if sorted(map(key, got)) != sorted(map(key, self.ref_trials)):
            return f"{folder.name}: {len(got)} trial records, not the reference run's {len(self.ref_trials)}"
        return None


# -- setup -------------------------------------------------------------------------------------------------------


def setup(ctx: Context) -> None:
    """The shared tiny artefacts: corpora, a reference run, a pre-finetuned variant and its export, a tuning and
    a run that chose its layers."""
    from metalearn.data.synth.generate import generate

    b = ctx.base
    with contextlib.redirect_stdout(io.StringIO()):
        generate("tiny", b / "data", seed=0, workers=2)
    ctx.preset.write_text("name: tiny\n")
    steps = [("reference run", ctx.run("ref")),
             ("iemocap manifest", ctx.cli("manifest", "--corpus", "iemocap", "--root", b / "data/iemocap", "--out",
                                          b / "manifests/iemocap.csv")),
             ("pre-finetuned variant", ctx.cli(*ctx.pretune_args(b / "pft"))),
             ("export", ctx.cli("export-variant", b / "pft/pft-iemocap", b / "export")),
             ("tuning", ctx.tune("tuned")),
             ("layer choice", ctx.run("layers", "features.choose_layer=true"))]
    for what, r in steps:
        if r.rc != 0:
            raise SystemExit(f"setup failed at the {what}: {r.err[-3000:]}")
    ctx.ref_trials = ctx.trials(b / "ref")
