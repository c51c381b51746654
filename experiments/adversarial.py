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
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
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


def flip_byte(path: Path, where: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0x01
    path.write_bytes(bytes(data))


def truncate(path: Path, keep: float = 0.5) -> None:
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])


def speakers_of(folder: Path) -> set[str]:
    with open(folder / "trials.csv", newline="") as f:
        return {row["speaker"] for row in csv.DictReader(f)}


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


# ==============================================================================================================
# Case 1: a changed backbone or recipe with the finished variants reused
# ==============================================================================================================


@attack("bad input", "1")
def changed_whisper_mode_reusing_pretune_out(ctx: Context) -> Outcome:
    return refused(ctx.run("c1-mode", "backbone.whisper_mode=window"), "whisper_mode")


@attack("bad input", "1")
def changed_backbone_source_default_reusing_pretune_out(ctx: Context) -> Outcome:
    return refused(ctx.run("c1-default", "backbone.source=default"), "source")


@attack("bad input", "1")
def backbone_source_dotdot_etc(ctx: Context) -> Outcome:
    return refused(ctx.run("c1-etc", "backbone.source=../../etc"), "../../etc")


@attack("bad input", "1")
def changed_backbone_layers_reusing_pretune_out(ctx: Context) -> Outcome:
    return refused(ctx.run("c1-layers", "backbone.layers=1"), "layers")


@attack("bad input", "1")
def pretune_again_with_another_recipe(ctx: Context) -> Outcome:
    out = ctx.copy("pft", "c1-pft-lr")
    return refused(ctx.cli(*ctx.pretune_args(out, recipe=("lr=1e-2",))), "lr")


@attack("bad input", "1")
def pretune_again_with_another_whisper_mode(ctx: Context) -> Outcome:
    out = ctx.copy("pft", "c1-pft-mode")
    return refused(ctx.cli(*ctx.pretune_args(out, "--whisper-mode", "window")), "whisper_mode")


@attack("bad input", "1")
def run_reusing_pft_variants_after_a_recipe_change(ctx: Context) -> Outcome:
    """A run whose pretune.out holds pft-iemocap trained with another recipe (pretune.recipe.lr changed)."""
    pft = ctx.copy("pft", "c1-run-pft")
    return refused(ctx.run_over_pft("c1-run-pft-out", pft, "pretune.recipe.lr=0.5"), "lr")


# ==============================================================================================================
# Case 2: speaker ids typed without quotes
# ==============================================================================================================


@attack("bad input", "2")
def octal_speaker_id_in_an_exclude_override(ctx: Context) -> Outcome:
    out = ctx.base / "c2-exclude"
    r = ctx.run(out, "speakers.exclude=[0011]", "speakers.folds=3")

    def check() -> str | None:
        if "0011" in speakers_of(out):
            return "speaker 0011 excluded but scored"
        if "'0011'" not in (out / "config.yaml").read_text():
            return "config.yaml does not record exclude ['0011']"
        return None
    return accepted(r, check)


@attack("bad input", "2")
def octal_speaker_ids_in_a_preset(ctx: Context) -> Outcome:
    preset = ctx.base / "c2-preset.yaml"
    preset.write_text("name: tiny\nspeakers: {exclude: [0011, 0012]}\n")
    out = ctx.base / "c2-preset"
    args = ctx.run_args(out, "speakers.folds=2", "speakers.validation=0")
    args[2] = str(preset)
    r = ctx.cli(*args)

    def check() -> str | None:
        scored = speakers_of(out)
        return f"excluded speakers scored: {sorted(scored & {'0011', '0012'})}" if scored & {"0011", "0012"} else None
    return either(r, ("speakers",), check)


@attack("bad input", "2")
def octal_speaker_id_as_the_test_set(ctx: Context) -> Outcome:
    out = ctx.base / "c2-test"
    r = ctx.run(out, "speakers.test=[0011]")
    return accepted(r, lambda: None if speakers_of(out) == {"0011"} else f"tested {sorted(speakers_of(out))}")


@attack("bad input", "2")
def octal_speaker_id_in_folds_exclude(ctx: Context) -> Outcome:
    emobox, out = emobox_folder(ctx), ctx.base / "c2-folds.json"
    r = ctx.cli("folds", "--emobox", emobox, "--manifest", ctx.base / "manifests/esd.csv", "--out", out,
                "--exclude", "0011", "--validation", "0")

    def check() -> str | None:
        folds = json.loads(out.read_text())
        named = {s for f in folds for k in ("test", "validation", "meta_train") for s in f.get(k, [])}
        return "--exclude 0011 still in a fold" if "0011" in named else None
    return either(r, ("0011",), check)


# ==============================================================================================================
# Case 3: damage found
# ==============================================================================================================


def edit_accuracy(log: Path, index: int = 2) -> None:
    lines = log.read_text().splitlines(keepends=True)
    record = json.loads(lines[index])
    record["accuracy"] = round(1.0 - record["accuracy"], 6) if record["accuracy"] != 0.5 else 0.25
    lines[index] = json.dumps(record) + "\n"
    log.write_text("".join(lines))


@attack("damage", "3")
def edited_digit_in_trials_jsonl_report(ctx: Context) -> Outcome:
    out = ctx.copy("ref", "c3-digit")
    edit_accuracy(out / "trials.jsonl")
    r = ctx.cli("report", out)
    return accepted(r, lambda: None if len(ctx.trials(out)) == len(ctx.ref_trials) - 1 else "edited record reported",
                    ("trials.jsonl:3", "sha256"))


@attack("damage", "3")
def edited_digit_in_trials_jsonl_resume(ctx: Context) -> Outcome:
    out = ctx.copy("ref", "c3-digit-run")
    edit_accuracy(out / "trials.jsonl")
    return accepted(ctx.run(out), lambda: ctx.same_as_ref(out), ("trials.jsonl:3", "scored again"))


@attack("damage", "3")
def edited_layers_json(ctx: Context) -> Outcome:
    out = ctx.copy("layers", "c3-layers")
    path = out / "layers.json"
    entries = json.loads(path.read_text())
    e = entries[0]
    wrong = next(int(k) for k in e["scores"] if int(k) != e["layer"])
    entries[0] = {**e, "layer": wrong}
    path.write_text(json.dumps(entries, indent=1))
    return accepted(ctx.run(out, "features.choose_layer=true"),
                    lambda: None if json.loads(path.read_text())[0]["layer"] == e["layer"] else "edited layer kept",
                    ("layers.json", f"records layer {wrong}"))


@attack("damage", "3")
def edited_optuna_journal_objective(ctx: Context) -> Outcome:
    out = ctx.copy("tuned", "c3-objective")
    journal = out / "tuning/journal.log"
    text, n = re.subn(r'("op_code":\s*6,[^\n]*"values":\s*\[)[0-9.e-]+(\])', r"\g<1>0.99\g<2>", journal.read_text(),
                      count=1)
    assert n == 1, "no objective in the journal"
    journal.write_text(text)
    return refused(ctx.tune(out), "0.99", "checksum")


@attack("damage", "3")
def flipped_byte_in_exported_model_safetensors(ctx: Context) -> Outcome:
    export = ctx.copy("export", "c3-export-flip")
    flip_byte(export / "model.safetensors")
    r = ctx.run("c3-export-flip-run", f"pretune.extra={{x: {export}}}")
    return refused(r, "model.safetensors", "damaged")


@attack("damage", "3")
def edited_value_in_the_tuned_overlay(ctx: Context) -> Outcome:
    out = ctx.copy("tuned", "c3-overlay")
    overlay = out / "tuning/tuned.yaml"
    text = overlay.read_text()
    edited, n = re.subn(r"(steps: )(\d+)", lambda m: m.group(1) + str(int(m.group(2)) + 7), text, count=1)
    if n == 0:
        edited, n = re.subn(r"(lr: )([0-9.e-]+)", r"\g<1>0.123", text, count=1)
    assert n == 1, "nothing to edit in tuned.yaml"
    overlay.write_text(edited)
    return refused(ctx.run("c3-overlay-run", "--tuned", overlay), "tuned.yaml")


# ==============================================================================================================
# Case 4: values out of range
# ==============================================================================================================


@attack("bad input", "4")
def negative_meta_train_steps(ctx: Context) -> Outcome:
    return refused(ctx.run("c4-a", "meta_train.steps=-5"), "meta_train.steps", ">=")


@attack("bad input", "4")
def negative_finetune_lr(ctx: Context) -> Outcome:
    return refused(ctx.run("c4-b", "algorithms.finetune.lr=-1", algorithms="finetune"), "algorithms.finetune.lr", ">")


@attack("bad input", "4")
def negative_finetune_steps(ctx: Context) -> Outcome:
    """steps=0 is allowed on purpose (finetune_config.py: "steps 0: the initial head"); -1 is not."""
    return refused(ctx.run("c4-c", "algorithms.finetune.steps=-1", algorithms="finetune"), "algorithms.finetune.steps")


@attack("bad input", "4")
def zero_finetune_steps_is_the_initial_head(ctx: Context) -> Outcome:
    out = ctx.base / "c4-c0"
    r = ctx.run(out, "algorithms.finetune.steps=0", algorithms="finetune")
    return accepted(r, lambda: None if "steps: 0" in (out / "config.yaml").read_text() else "steps 0 not recorded")


@attack("bad input", "4")
def negative_finetune_eval_every(ctx: Context) -> Outcome:
    return refused(ctx.run("c4-d", "algorithms.finetune.eval_every=-1", algorithms="finetune"),
                   "algorithms.finetune.eval_every")


@attack("bad input", "4")
def nan_lr(ctx: Context) -> Outcome:
    return refused(ctx.run("c4-e", "algorithms.finetune.lr=nan", algorithms="finetune"), "algorithms.finetune.lr")


@attack("bad input", "4")
def infinite_lr(ctx: Context) -> Outcome:
    return refused(ctx.run("c4-f", "algorithms.finetune.lr=inf", algorithms="finetune"), "algorithms.finetune.lr")


@attack("bad input", "4")
def pretune_negative_lr(ctx: Context) -> Outcome:
    return refused(ctx.cli(*ctx.pretune_args(ctx.base / "c4-pft", recipe=("lr=-1",))), "lr")


@attack("bad input", "4")
def pretune_zero_batch_size(ctx: Context) -> Outcome:
    return refused(ctx.cli(*ctx.pretune_args(ctx.base / "c4-pft2", recipe=("batch_size=0",))), "batch_size")


@attack("bad input", "4")
def tune_zero_trials(ctx: Context) -> Outcome:
    return refused(ctx.tune("c4-tune", "tune.trials=0"), "tune.trials")


@attack("bad input", "4")
def tune_trials_flag_negative(ctx: Context) -> Outcome:
    args = ctx.tune_args("c4-tune2")
    return refused(ctx.cli(args[0], "--trials", "-1", *args[1:]), "trials")


@attack("bad input", "4")
def tune_zero_meta_steps(ctx: Context) -> Outcome:
    return refused(ctx.tune("c4-tune3", "tune.meta_steps=[0]"), "tune.meta_steps")


# ==============================================================================================================
# Case 5: former tracebacks
# ==============================================================================================================


@attack("damage", "5")
def damaged_folds_json_in_a_run_folder(ctx: Context) -> Outcome:
    out = ctx.copy("ref", "c5-folds")
    (out / "folds.json").write_text('[{"fold": 0, "test": ["0011"')
    return refused(ctx.run(out), "folds.json")


@attack("damage", "5")
def truncated_optuna_journal(ctx: Context) -> Outcome:
    out = ctx.copy("tuned", "c5-journal")
    truncate(out / "tuning/journal.log", 0.6)
    return refused(ctx.tune(out), "journal.log")


@attack("damage", "5")
def garbage_in_the_middle_of_the_optuna_journal(ctx: Context) -> Outcome:
    out = ctx.copy("tuned", "c5-journal2")
    journal = out / "tuning/journal.log"
    lines = journal.read_bytes().splitlines(keepends=True)
    lines[2] = b"\xff\xfe garbage\n"
    journal.write_bytes(b"".join(lines))
    return refused(ctx.tune(out), "journal.log")


@attack("damage", "5")
def truncated_export_as_pretune_extra(ctx: Context) -> Outcome:
    export = ctx.copy("export", "c5-export-trunc")
    truncate(export / "model.safetensors")
    return refused(ctx.run("c5-export-trunc-run", f"pretune.extra={{x: {export}}}"), "model.safetensors")


@attack("bad input", "5")
def chunk_zero(ctx: Context) -> Outcome:
    return refused(ctx.run("c5-chunk", "chunk=0"), "chunk", ">= 1")


@attack("bad input", "5")
def config_key_with_dotdot(ctx: Context) -> Outcome:
    return refused(ctx.run("c5-dotdot", "pretune.extra.a..b=x"), "pretune.extra.a..b")


@attack("bad input", "5")
def export_variant_into_proc(ctx: Context) -> Outcome:
    return refused(ctx.cli("export-variant", ctx.base / "pft/pft-iemocap", "/proc/nope/out"), "/proc/nope")


@attack("bad input", "5")
def export_variant_under_a_file(ctx: Context) -> Outcome:
    (ctx.base / "c5-a-file").write_text("x")
    return refused(ctx.cli("export-variant", ctx.base / "pft/pft-iemocap", ctx.base / "c5-a-file/out"), "c5-a-file")


@attack("bad input", "5")
def export_variant_into_an_unwritable_folder(ctx: Context) -> Outcome:
    locked = ctx.base / "c5-locked"
    locked.mkdir()
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode != 0:
            return Outcome("right", "skipped: cannot make a folder immutable here (root without chattr)")
    else:
        locked.chmod(0o555)
    try:
        return refused(ctx.cli("export-variant", ctx.base / "pft/pft-iemocap", locked / "out"), "c5-locked")
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(locked)], capture_output=True)
        locked.chmod(0o755)


@attack("bad input", "5")
def folds_out_into_proc(ctx: Context) -> Outcome:
    return refused(ctx.cli("folds", "--emobox", emobox_folder(ctx), "--manifest", ctx.base / "manifests/esd.csv",
                           "--out", "/proc/nope/x.json"), "/proc/nope")


@attack("bad input", "5")
def run_out_into_proc(ctx: Context) -> Outcome:
    return refused(ctx.run("/proc/nope/run"), "/proc/nope")


@attack("bad input", "5")
def run_out_under_a_file(ctx: Context) -> Outcome:
    (ctx.base / "c5-file2").write_text("x")
    return refused(ctx.run(ctx.base / "c5-file2/run"), "c5-file2")


@attack("bad input", "5")
def manifests_dir_under_a_file(ctx: Context) -> Outcome:
    (ctx.base / "c5-file3").write_text("x")
    return refused(ctx.run("c5-man", manifests=ctx.base / "c5-file3/m"), "c5-file3")


@attack("bad input", "5")
def cache_dir_under_a_file(ctx: Context) -> Outcome:
    (ctx.base / "c5-file4").write_text("x")
    return refused(ctx.run("c5-cache", cache=ctx.base / "c5-file4/c"), "c5-file4")


@attack("bad input", "5")
def pretune_out_under_a_file(ctx: Context) -> Outcome:
    (ctx.base / "c5-file5").write_text("x")
    return refused(ctx.cli(*ctx.pretune_args(ctx.base / "c5-file5/pft")), "c5-file5")


@attack("bad input", "5")
def merge_out_into_proc(ctx: Context) -> Outcome:
    return refused(ctx.cli("merge", "/proc/nope/merged", ctx.base / "ref"), "/proc/nope")


@attack("bad input", "5")
def manifest_out_into_proc(ctx: Context) -> Outcome:
    return refused(ctx.cli("manifest", "--corpus", "esd", "--root", ctx.base / "data/esd", "--out",
                           "/proc/nope/esd.csv"), "/proc/nope")


# ==============================================================================================================
# Case 6: misleading results
# ==============================================================================================================


@attack("bad input", "6")
def empty_test_set(ctx: Context) -> Outcome:
    r = ctx.run("c6-test", "speakers.test=[]")
    out = refused(r, "speakers.test")
    if out.outcome == "right" and (ctx.base / "c6-test").exists():
        return Outcome("silent", f"refused after writing the run folder: {out.message}")
    return out


@attack("bad input", "6")
def negative_chunk(ctx: Context) -> Outcome:
    r = ctx.run("c6-chunk", "chunk=-3")
    out = refused(r, "chunk")
    if out.outcome == "right" and (ctx.base / "c6-chunk").exists():
        return Outcome("silent", f"refused after writing the run folder: {out.message}")
    return out


@attack("damage", "6")
def truncated_tuning_config_yaml(ctx: Context) -> Outcome:
    out = ctx.copy("tuned", "c6-tconfig")
    truncate(out / "tuning/config.yaml")
    r = ctx.tune(out)
    o = refused(r, "config.yaml", "damaged")
    return o


@attack("damage", "6")
def damaged_backbone_safetensors_of_a_finished_variant(ctx: Context) -> Outcome:
    out = ctx.copy("pft", "c6-pft-flip")
    flip_byte(out / "pft-iemocap/backbone.safetensors")
    r = ctx.cli(*ctx.pretune_args(out))
    if r.rc == 0 and "skipped (done)" in r.out + r.err and "damaged" not in (r.out + r.err).lower():
        return Outcome("silent", "reported skipped (done)")
    return either(r, ("backbone.safetensors",), lambda: None, ("backbone.safetensors",))


@attack("damage", "6")
def truncated_backbone_safetensors_used_by_a_run(ctx: Context) -> Outcome:
    pft = ctx.copy("pft", "c6-pft-trunc")
    truncate(pft / "pft-iemocap/backbone.safetensors")
    return refused(ctx.run_over_pft("c6-pft-trunc-run", pft), "backbone.safetensors")


@attack("concurrency", "6")
def tune_while_a_run_holds_the_folder(ctx: Context) -> Outcome:
    out = ctx.base / "c6-locked"
    holder = hold_lock(ctx, out, "run")
    try:
        r = ctx.sub(*ctx.tune_args(out))
    finally:
        release(holder)
    o = refused(r, "in use")
    if o.outcome == "right" and (out / "tuning").exists():
        return Outcome("silent", f"refused after writing tuning/: {o.message}")
    return o


@attack("bad input", "6")
def push_to_hub_with_a_bad_repo_id(ctx: Context) -> Outcome:
    out = ctx.base / "c6-push"
    o = refused(ctx.cli("export-variant", ctx.base / "pft/pft-iemocap", out, "--push-to-hub", "not a repo"),
                "not a repo")
    if o.outcome == "right" and out.exists():
        return Outcome("silent", f"refused after writing the export: {o.message}")
    return o


# ==============================================================================================================
# Further damage
# ==============================================================================================================


@attack("damage")
def torn_last_line_of_trials_jsonl(ctx: Context) -> Outcome:
    out = ctx.copy("ref", "d-torn")
    log = out / "trials.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    return accepted(ctx.run(out), lambda: ctx.same_as_ref(out))


@attack("damage")
def binary_garbage_line_in_trials_jsonl(ctx: Context) -> Outcome:
    out = ctx.copy("ref", "d-garbage")
    log = out / "trials.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    lines.insert(3, b"\x00\xff\xfe\x01 garbage\n")
    log.write_bytes(b"".join(lines))
    return accepted(ctx.cli("report", out), lambda: None if len(ctx.trials(out)) == len(ctx.ref_trials) else
                    "records lost or added", ("trials.jsonl:4",))


@attack("damage")
def record_with_a_recomputed_checksum_but_wrong_type(ctx: Context) -> Outcome:
    from metalearn.report.records import CHECKSUM, checksum

    out = ctx.copy("ref", "d-type")
    log = out / "trials.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    record = {k: v for k, v in json.loads(lines[1]).items() if k != CHECKSUM}
    record["accuracy"] = "high"
    lines[1] = json.dumps({**record, CHECKSUM: checksum(record)}) + "\n"
    log.write_text("".join(lines))
    r = ctx.cli("report", out)
    return either(r, ("trials.jsonl",), lambda: None, ("trials.jsonl:2",))


@attack("damage")
def truncated_episodes_file(ctx: Context) -> Outcome:
    out = ctx.copy("ref", "d-episodes")
    truncate(out / "episodes-seed0.jsonl", 0.5)
    return either(ctx.run(out), ("episodes-seed0.jsonl",), lambda: ctx.same_as_ref(out), ("episodes-seed0.jsonl",))


@attack("damage")
def edited_episode_in_the_episodes_file(ctx: Context) -> Outcome:
    out = ctx.copy("ref", "d-episodes-edit")
    path = out / "episodes-seed0.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    e = json.loads(lines[0])
    text = json.dumps(e)
    swapped = re.sub(r'"(\d{4}_\d{6})"', lambda m: '"' + m.group(1)[:-1] + str((int(m.group(1)[-1]) + 1) % 10) + '"',
                     text, count=1)
    lines[0] = swapped + "\n"
    path.write_text("".join(lines))
    (out / "trials.jsonl").unlink()
    r = ctx.run(out)
    return either(r, ("episodes-seed0.jsonl",), lambda: ctx.same_as_ref(out))


@attack("damage")
def truncated_config_yaml_of_a_run(ctx: Context) -> Outcome:
    out = ctx.copy("ref", "d-config")
    truncate(out / "config.yaml", 0.4)
    return either(ctx.run(out), ("config.yaml",), lambda: ctx.same_as_ref(out), ("config.yaml",))


@attack("damage")
def another_config_into_a_finished_run(ctx: Context) -> Outcome:
    out = ctx.copy("ref", "d-another")
    return refused(ctx.run(out, "episodes.repetitions=3"), "episodes.repetitions")


@attack("damage")
def damaged_run_json(ctx: Context) -> Outcome:
    out = ctx.copy("ref", "d-runjson")
    (out / "run.json").write_text("{not json")
    return either(ctx.run(out), ("run.json",), lambda: ctx.same_as_ref(out))


@attack("damage")
def damaged_learned_json(ctx: Context) -> Outcome:
    out = ctx.copy("ref", "d-learned")
    (out / "learned.json").write_text("[1, 2")
    return either(ctx.run(out), ("learned.json",), lambda: ctx.same_as_ref(out))


@attack("damage")
def damaged_skipped_jsonl(ctx: Context) -> Outcome:
    out = ctx.copy("ref", "d-skipped")
    (out / "skipped.jsonl").write_bytes(b"\xff\xfe{\n")
    return either(ctx.run(out), ("skipped.jsonl",), lambda: ctx.same_as_ref(out))


@attack("damage")
def damaged_timing_json(ctx: Context) -> Outcome:
    out = ctx.copy("ref", "d-timing")
    (out / "timing.json").write_text("{")
    return either(ctx.run(out), ("timing.json",), lambda: ctx.same_as_ref(out))


@attack("damage")
def damaged_plan_json_for_status(ctx: Context) -> Outcome:
    out = ctx.copy("ref", "d-plan")
    (out / "plan.json").write_text("{garbage")
    r = ctx.cli("status", out)
    return either(r, ("plan.json",), lambda: None if "16" in r.out else f"status did not count 16 trials: {r.out}")


@attack("damage")
def truncated_manifest_csv(ctx: Context) -> Outcome:
    man = ctx.base / "d-manifests"
    shutil.copytree(ctx.base / "manifests", man)
    truncate(man / "esd.csv", 0.5)
    out = ctx.base / "d-manifest-run"
    return either(ctx.run(out, manifests=man), ("esd.csv",), lambda: ctx.same_as_ref(out), ("esd.csv",))


@attack("damage")
def embedding_cache_with_a_flipped_byte(ctx: Context) -> Outcome:
    cache = ctx.base / "d-cache"
    shutil.copytree(ctx.base / "cache", cache)
    files = sorted((p for p in cache.rglob("*") if p.is_file() and p.stat().st_size > 1000),
                   key=lambda p: p.stat().st_size)
    flip_byte(files[-1], 0.7)
    out = ctx.base / "d-cache-run"
    return accepted(ctx.run(out, cache=cache), lambda: ctx.same_as_ref(out))


@attack("damage")
def truncated_embedding_cache(ctx: Context) -> Outcome:
    cache = ctx.base / "d-cache2"
    shutil.copytree(ctx.base / "cache", cache)
    for p in cache.rglob("*"):
        if p.is_file() and p.stat().st_size > 1000:
            truncate(p, 0.3)
    out = ctx.base / "d-cache2-run"
    return accepted(ctx.run(out, cache=cache), lambda: ctx.same_as_ref(out))


@attack("damage")
def truncated_wav_in_the_corpus(ctx: Context) -> Outcome:
    corpus = ctx.base / "d-esd"
    shutil.copytree(ctx.base / "data/esd", corpus)
    wav = sorted(corpus.rglob("*.wav"))[5]
    wav.write_bytes(wav.read_bytes()[:30])
    out = ctx.base / "d-wav-run"
    r = ctx.run(out, target=corpus, manifests=ctx.base / "d-wav-manifests", cache=ctx.base / "d-wav-cache")
    return either(r, (wav.name,), lambda: None, (wav.stem,))


@attack("damage")
def damaged_pft_config_json(ctx: Context) -> Outcome:
    out = ctx.copy("pft", "d-pft-config")
    (out / "pft-iemocap/config.json").write_text("{")
    r = ctx.cli(*ctx.pretune_args(out))
    return either(r, ("config.json",), lambda: None, ("config.json",))


@attack("damage")
def damaged_pft_done_json(ctx: Context) -> Outcome:
    out = ctx.copy("pft", "d-pft-done")
    (out / "pft-iemocap/done.json").write_text("[")
    r = ctx.cli(*ctx.pretune_args(out))
    return either(r, ("done.json",), lambda: None, ("done.json",))


@attack("damage")
def truncated_pft_heads_safetensors(ctx: Context) -> Outcome:
    out = ctx.copy("pft", "d-pft-heads")
    truncate(out / "pft-iemocap/heads.safetensors")
    r = ctx.cli(*ctx.pretune_args(out))
    if r.rc == 0 and "heads.safetensors" not in r.err + r.out:
        return Outcome("silent", "a truncated heads.safetensors passed as done")
    return either(r, ("heads.safetensors",), lambda: None, ("heads.safetensors",))


@attack("damage")
def export_of_a_variant_with_a_damaged_backbone(ctx: Context) -> Outcome:
    pft = ctx.copy("pft", "d-pft-export")
    flip_byte(pft / "pft-iemocap/backbone.safetensors")
    return refused(ctx.cli("export-variant", pft / "pft-iemocap", ctx.base / "d-pft-export-out"),
                   "backbone.safetensors")


@attack("damage")
def export_with_a_damaged_sha256_json(ctx: Context) -> Outcome:
    export = ctx.copy("export", "d-export-manifest")
    (export / "sha256.json").write_text("{")
    return refused(ctx.run("d-export-manifest-run", f"pretune.extra={{x: {export}}}"), "sha256.json")


@attack("damage")
def export_with_a_damaged_config_json(ctx: Context) -> Outcome:
    export = ctx.copy("export", "d-export-config")
    (export / "config.json").write_text("{")
    return refused(ctx.run("d-export-config-run", f"pretune.extra={{x: {export}}}"), "config.json")


@attack("damage")
def export_with_a_file_missing(ctx: Context) -> Outcome:
    export = ctx.copy("export", "d-export-missing")
    (export / "model.safetensors").unlink()
    return refused(ctx.run("d-export-missing-run", f"pretune.extra={{x: {export}}}"), "model.safetensors")


@attack("damage")
def truncated_tuned_overlay(ctx: Context) -> Outcome:
    out = ctx.copy("tuned", "d-overlay")
    overlay = out / "tuning/tuned.yaml"
    truncate(overlay, 0.5)
    return refused(ctx.run("d-overlay-run", "--tuned", overlay), "tuned.yaml")


@attack("damage")
def binary_garbage_appended_to_the_optuna_journal(ctx: Context) -> Outcome:
    out = ctx.copy("tuned", "d-journal3")
    with open(out / "tuning/journal.log", "ab") as f:
        f.write(b"\x00\xff{\"op_code\": 6, \"tri")
    r = ctx.tune(out)
    return either(r, ("journal.log",), lambda: None)


@attack("damage")
def damaged_external_folds_file(ctx: Context) -> Outcome:
    path = ctx.base / "d-folds.json"
    path.write_text('[{"fold": 0, "test": [')
    return refused(ctx.run("d-folds-run", f"speakers.folds_file={path}"), "d-folds.json")


@attack("damage")
def merge_with_an_edited_record(ctx: Context) -> Outcome:
    src = ctx.copy("ref", "d-merge-src")
    edit_accuracy(src / "trials.jsonl", 4)
    out = ctx.base / "d-merged"
    r = ctx.cli("merge", out, src)
    return accepted(r, lambda: None if len(ctx.trials(out)) == len(ctx.ref_trials) - 1 else "edited record merged",
                    ("trials.jsonl:5",))


@attack("damage")
def damaged_tuning_csv_and_tuning_md_rerun(ctx: Context) -> Outcome:
    out = ctx.copy("tuned", "d-tuning-csv")
    (out / "tuning/finetune.csv").write_text("garbage,\n1")
    r = ctx.tune(out)
    return either(r, ("finetune.csv",), lambda: None if "garbage" not in (out / "tuning/finetune.csv").read_text()
                  else "damaged finetune.csv left as it was")


# ==============================================================================================================
# Further bad input
# ==============================================================================================================


def _bad(name: str, *extra: str, needles: tuple[str, ...], algorithms: str = "simpleshot") -> None:
    def fn(ctx: Context) -> Outcome:
        out = ctx.base / f"b-{name}"
        o = refused(ctx.run(out, *extra, algorithms=algorithms), *needles)
        if o.outcome == "right" and (out / "trials.jsonl").exists():
            return Outcome("silent", f"refused after scoring: {o.message}")
        return o
    fn.__name__ = name
    attack("bad input")(fn)


_bad("unknown_config_key", "episodes.kz=[1]", needles=("episodes.kz",))
_bad("unknown_algorithm", algorithms="simpleshot,nope", needles=("nope",))
_bad("zero_shots", "episodes.ks=[0]", needles=("episodes.ks",))
_bad("negative_shots", "episodes.ks=[-1]", needles=("episodes.ks",))
_bad("no_shots", "episodes.ks=[]", needles=("episodes.ks",))
_bad("zero_folds", "speakers.folds=0", needles=("speakers.folds",))
_bad("more_folds_than_speakers", "speakers.folds=9", needles=("speakers.folds",))
_bad("negative_validation", "speakers.validation=-1", needles=("speakers.validation",))
_bad("too_many_validation_speakers", "speakers.validation=5", needles=("speakers.validation",))
_bad("no_seeds", "seeds=[]", needles=("seeds",))
_bad("text_seed", "seeds=[a]", needles=("seeds",))
_bad("text_repetitions", "episodes.repetitions=abc", needles=("episodes.repetitions",))
_bad("float_repetitions", "episodes.repetitions=1.5", needles=("episodes.repetitions",))
_bad("bool_chunk", "chunk=true", needles=("chunk",))
_bad("zero_backbone_layers", "backbone.layers=0", needles=("backbone.layers",))
_bad("negative_backbone_layers", "backbone.layers=-1", needles=("backbone.layers",))
_bad("too_many_backbone_layers", needles=("layers", "99"))  # pretune.out set below
_bad("unknown_whisper_mode", "backbone.whisper_mode=sideways", needles=("backbone.whisper_mode",))
_bad("unknown_backbone_family", "backbone.family=lstm", needles=("backbone.family",))
_bad("missing_target_root", "data.target.root=/nonexistent/esd", needles=("/nonexistent/esd",))
_bad("unknown_test_speaker", "speakers.test=[9999]", needles=("9999",))
_bad("every_speaker_excluded", "speakers.exclude=[0011,0012,0015,0016]", needles=("speakers",))
_bad("more_shots_than_clips", "episodes.ks=[500]", needles=("500",))
_bad("cuda_without_a_gpu", "device=cuda", needles=("cuda",))
_bad("embeddings_on_a_missing_gpu", "embeddings.device=cuda:5", needles=("cuda",))
_bad("unknown_device", "device=tpu", needles=("device",))
_bad("missing_tuned_file", "tuned.file=/nonexistent/tuned.yaml", needles=("/nonexistent/tuned.yaml",))
_bad("missing_folds_file", "speakers.folds_file=/nonexistent/folds.json", needles=("/nonexistent/folds.json",))
_bad("empty_algorithm_list", algorithms="", needles=("algorithms.run",))
_bad("mapping_for_a_number", "chunk={a: 1}", needles=("chunk",))
_bad("list_for_a_number", "episodes.repetitions=[2]", needles=("episodes.repetitions",))
_bad("unknown_pretune_subset", "pretune.subsets=[nope]", needles=("nope",))
_bad("negative_queries", "episodes.queries=-2", needles=("episodes.queries",))
_bad("nul_byte_in_out", needles=("out",))  # out replaced below


@attack("bad input")
def unknown_excluded_speaker(ctx: Context) -> Outcome:
    out = ctx.base / "b-exclude-9999"
    return accepted(ctx.run(out, "speakers.exclude=[9999]"), lambda: ctx.same_as_ref(out),
                    ("speakers.exclude", "9999"))


@attack("bad input")
def missing_config_file(ctx: Context) -> Outcome:
    args = ctx.run_args("b-config")
    args[2] = str(ctx.base / "nope.yaml")
    return refused(ctx.cli(*args), "nope.yaml")


def _run_with_preset(ctx: Context, name: str, content: str | bytes, expect: str) -> Outcome:
    """A run whose --config is a preset file holding ``content``, refused in a line naming ``expect``."""
    preset = ctx.base / f"{name}.yaml"
    if isinstance(content, bytes):
        preset.write_bytes(content)
    else:
        preset.write_text(content)
    args = ctx.run_args(name)
    args[2] = str(preset)
    return refused(ctx.cli(*args), expect)


@attack("bad input")
def preset_with_a_yaml_syntax_error(ctx: Context) -> Outcome:
    return _run_with_preset(ctx, "b-syntax", "name: tiny\nspeakers: {exclude: [0011\n", "b-syntax.yaml")


@attack("bad input")
def preset_that_is_a_list(ctx: Context) -> Outcome:
    return _run_with_preset(ctx, "b-list", "- name\n- tiny\n", "b-list.yaml")


@attack("bad input")
def preset_with_an_unknown_key(ctx: Context) -> Outcome:
    return _run_with_preset(ctx, "b-unknown", "name: tiny\nepisodez: {ks: [1]}\n", "episodez")


@attack("bad input")
def binary_preset_file(ctx: Context) -> Outcome:
    return _run_with_preset(ctx, "b-binary", b"\xff\xfe\x00\x01name: tiny\n", "b-binary.yaml")


@attack("bad input")
def override_without_an_equals_sign(ctx: Context) -> Outcome:
    return refused(ctx.run("b-noeq", "episodes.repetitions"), "episodes.repetitions")


@attack("bad input")
def override_with_a_bad_yaml_value(ctx: Context) -> Outcome:
    return refused(ctx.run("b-badyaml", "episodes.ks=[1,"), "episodes.ks")


@attack("bad input")
def shard_zero(ctx: Context) -> Outcome:
    return refused(ctx.cli(*ctx.run_args("b-shard0"), "--shard", "0/2"), "0/2")


@attack("bad input")
def shard_past_the_count(ctx: Context) -> Outcome:
    return refused(ctx.cli(*ctx.run_args("b-shard3"), "--shard", "3/2"), "3/2")


@attack("bad input")
def shard_not_a_fraction(ctx: Context) -> Outcome:
    return refused(ctx.cli(*ctx.run_args("b-shardx"), "--shard", "x"), "shard")


@attack("bad input")
def shard_before_prepare(ctx: Context) -> Outcome:
    """The variants are trained already (the shared pretune.out): the shard runs its half and says so."""
    out = ctx.base / "b-shard-unprepared"
    r = ctx.cli(*ctx.run_args(out), "--shard", "1/2")
    return accepted(r, lambda: None if 0 < len(ctx.trials(out)) < len(ctx.ref_trials) else
                    f"{len(ctx.trials(out))} records after one shard of two")


@attack("bad input")
def missing_tuned_overlay_flag(ctx: Context) -> Outcome:
    return refused(ctx.cli(*ctx.run_args("b-tuned"), "--tuned", ctx.base / "nope-tuned.yaml"), "nope-tuned.yaml")


@attack("bad input")
def report_of_a_missing_folder(ctx: Context) -> Outcome:
    return refused(ctx.cli("report", ctx.base / "nope-run"), "nope-run")


@attack("bad input")
def report_of_an_empty_folder(ctx: Context) -> Outcome:
    (ctx.base / "b-empty").mkdir()
    return refused(ctx.cli("report", ctx.base / "b-empty"), "b-empty")


@attack("bad input")
def report_with_an_unknown_reference(ctx: Context) -> Outcome:
    out = ctx.copy("ref", "b-report-ref")
    return refused(ctx.cli("report", out, "--reference", "nope"), "nope")


@attack("bad input")
def merge_into_one_of_its_sources(ctx: Context) -> Outcome:
    src = ctx.copy("ref", "b-merge-self")
    before = (src / "trials.jsonl").read_bytes()
    r = ctx.cli("merge", src, src)
    if r.rc == 0 and (src / "trials.jsonl").read_bytes() != before and len(ctx.trials(src)) != len(ctx.ref_trials):
        return Outcome("silent", "merged a folder into itself and changed its records")
    return either(r, ("b-merge-self",), lambda: None if len(ctx.trials(src)) == len(ctx.ref_trials) else
                  "records duplicated")


@attack("bad input")
def merge_of_a_missing_folder(ctx: Context) -> Outcome:
    return refused(ctx.cli("merge", ctx.base / "b-merged", ctx.base / "nope-src"), "nope-src")


@attack("bad input")
def export_of_a_folder_that_is_no_variant(ctx: Context) -> Outcome:
    return refused(ctx.cli("export-variant", ctx.base / "ref", ctx.base / "b-export"), "ref")


@attack("bad input")
def export_of_an_unfinished_variant(ctx: Context) -> Outcome:
    pft = ctx.copy("pft", "b-unfinished")
    (pft / "pft-iemocap/done.json").unlink()
    return refused(ctx.cli("export-variant", pft / "pft-iemocap", ctx.base / "b-export2"), "done.json")


@attack("bad input")
def export_over_a_file(ctx: Context) -> Outcome:
    (ctx.base / "b-export-file").write_text("x")
    return refused(ctx.cli("export-variant", ctx.base / "pft/pft-iemocap", ctx.base / "b-export-file"),
                   "b-export-file")


@attack("bad input")
def export_over_a_folder_that_is_no_export(ctx: Context) -> Outcome:
    out = ctx.copy("ref", "b-export-over-run")
    r = ctx.cli("export-variant", ctx.base / "pft/pft-iemocap", out)
    if r.rc == 0 and not (out / "trials.jsonl").exists():
        return Outcome("silent", "replaced a run folder (not an export) by the export")
    return either(r, ("b-export-over-run",), lambda: None)


@attack("bad input")
def folds_from_a_missing_emobox_folder(ctx: Context) -> Outcome:
    return refused(ctx.cli("folds", "--emobox", ctx.base / "nope-emobox", "--manifest", ctx.base / "manifests/esd.csv",
                           "--out", ctx.base / "b-folds.json"), "nope-emobox")


@attack("bad input")
def folds_with_a_missing_manifest(ctx: Context) -> Outcome:
    return refused(ctx.cli("folds", "--emobox", emobox_folder(ctx), "--manifest", ctx.base / "nope.csv",
                           "--out", ctx.base / "b-folds2.json"), "nope.csv")


@attack("bad input")
def folds_that_are_not_speaker_disjoint(ctx: Context) -> Outcome:
    emobox = emobox_folder(ctx, disjoint=False)
    return refused(ctx.cli("folds", "--emobox", emobox, "--manifest", ctx.base / "manifests/esd.csv", "--out",
                           ctx.base / "b-folds3.json"), "speaker")


@attack("bad input")
def folds_with_negative_validation(ctx: Context) -> Outcome:
    return refused(ctx.cli("folds", "--emobox", emobox_folder(ctx), "--manifest", ctx.base / "manifests/esd.csv",
                           "--out", ctx.base / "b-folds4.json", "--validation", "-1"), "validation")


@attack("bad input")
def pretune_with_a_missing_manifest(ctx: Context) -> Outcome:
    args = ctx.pretune_args(ctx.base / "b-pft")
    args[2] = str(ctx.base / "nope.csv")
    return refused(ctx.cli(*args), "nope.csv")


@attack("bad input")
def pretune_with_an_unknown_subset(ctx: Context) -> Outcome:
    args = ctx.pretune_args(ctx.base / "b-pft2")
    args[args.index("--subsets") + 1] = "nope"
    return refused(ctx.cli(*args), "nope")


@attack("bad input")
def pretune_with_an_unknown_setting(ctx: Context) -> Outcome:
    return refused(ctx.cli(*ctx.pretune_args(ctx.base / "b-pft3", recipe=("nope=1",))), "nope")


@attack("bad input")
def pretune_with_zero_backbone_layers(ctx: Context) -> Outcome:
    return refused(ctx.cli(*ctx.pretune_args(ctx.base / "b-pft4", "--backbone-layers", "0")), "layers")


@attack("bad input")
def pretune_with_an_unknown_preset(ctx: Context) -> Outcome:
    return refused(ctx.cli(*ctx.pretune_args(ctx.base / "b-pft5", "--preset", "nope")), "nope")


@attack("bad input")
def status_of_a_missing_folder(ctx: Context) -> Outcome:
    return refused(ctx.cli("status", ctx.base / "nope-status"), "nope-status")


@attack("bad input")
def status_with_zero_shards(ctx: Context) -> Outcome:
    return refused(ctx.cli("status", ctx.base / "ref", "--shards", "0"), "--shards")


@attack("bad input")
def launch_with_zero_shards(ctx: Context) -> Outcome:
    args = ctx.run_args("b-launch")
    return refused(ctx.cli("launch", *args[1:], "--shards", "0", "--executor", "debug"), "shards")


@attack("bad input")
def launch_with_negative_shards(ctx: Context) -> Outcome:
    args = ctx.run_args("b-launch2")
    return refused(ctx.cli("launch", *args[1:], "--shards", "-2", "--executor", "debug"), "shards")


@attack("bad input")
def embed_with_a_missing_manifest(ctx: Context) -> Outcome:
    return refused(ctx.cli("embed", "--manifest", ctx.base / "nope.csv", "--backbone-source", "tiny",
                           "--backbone-family", "whisper", "--cache-dir", ctx.base / "b-cache"), "nope.csv")


@attack("bad input")
def embed_with_zero_batch_seconds(ctx: Context) -> Outcome:
    return refused(ctx.cli("embed", "--manifest", ctx.base / "manifests/esd.csv", "--backbone-source", "tiny",
                           "--backbone-family", "whisper", "--cache-dir", ctx.base / "b-cache2", "--batch-seconds",
                           "0"), "--batch-seconds")


@attack("bad input")
def embed_with_negative_max_seconds(ctx: Context) -> Outcome:
    return refused(ctx.cli("embed", "--manifest", ctx.base / "manifests/esd.csv", "--backbone-source", "tiny",
                           "--backbone-family", "whisper", "--cache-dir", ctx.base / "b-cache3", "--max-seconds",
                           "-1"), "--max-seconds")


@attack("bad input")
def embed_with_a_missing_variant(ctx: Context) -> Outcome:
    return refused(ctx.cli("embed", "--manifest", ctx.base / "manifests/esd.csv", "--variant", ctx.base / "nope-var",
                           "--cache-dir", ctx.base / "b-cache4"), "nope-var")


@attack("bad input")
def manifest_of_an_unknown_corpus(ctx: Context) -> Outcome:
    return refused(ctx.cli("manifest", "--corpus", "nope", "--root", ctx.base / "data/esd", "--out",
                           ctx.base / "b-m.csv"), "nope")


@attack("bad input")
def manifest_of_a_missing_root(ctx: Context) -> Outcome:
    return refused(ctx.cli("manifest", "--corpus", "esd", "--root", ctx.base / "nope-root", "--out",
                           ctx.base / "b-m2.csv"), "nope-root")


@attack("bad input")
def manifest_of_the_wrong_corpus_layout(ctx: Context) -> Outcome:
    return refused(ctx.cli("manifest", "--corpus", "iemocap", "--root", ctx.base / "data/esd", "--out",
                           ctx.base / "b-m3.csv"), "data/esd")


@attack("bad input")
def manifest_with_an_unknown_class(ctx: Context) -> Outcome:
    return refused(ctx.cli("manifest", "--corpus", "esd", "--root", ctx.base / "data/esd", "--out",
                           ctx.base / "b-m4.csv", "--classes", "neutral,joyful"), "joyful")


@attack("bad input")
def synth_with_an_unknown_preset(ctx: Context) -> Outcome:
    return refused(ctx.cli("synth", "--preset", "nope", "--out", ctx.base / "b-synth"), "nope")


def episode_args(ctx: Context, *extra: str) -> list[str]:
    return ["episode", "--manifest", ctx.base / "manifests/esd.csv", "--algorithms", "simpleshot", "--k", "1",
            "--backbone-source", "tiny", "--backbone-family", "whisper", "--cache-dir", ctx.base / "cache",
            "--out", ctx.base / "b-episode.png", *extra]


@attack("bad input")
def episode_of_an_unknown_speaker(ctx: Context) -> Outcome:
    return refused(ctx.cli(*episode_args(ctx, "--speaker", "9999")), "9999")


@attack("bad input")
def episode_with_zero_shots(ctx: Context) -> Outcome:
    return refused(ctx.cli(*episode_args(ctx, "--k", "0")), "--k")


@attack("bad input")
def episode_with_more_shots_than_clips(ctx: Context) -> Outcome:
    return refused(ctx.cli(*episode_args(ctx, "--k", "500")), "500")


@attack("bad input")
def episode_with_an_unknown_algorithm(ctx: Context) -> Outcome:
    args = episode_args(ctx)
    args[args.index("--algorithms") + 1] = "nope"
    return refused(ctx.cli(*args), "nope")


@attack("bad input")
def episode_out_into_proc(ctx: Context) -> Outcome:
    args = episode_args(ctx)
    args[args.index("--out") + 1] = "/proc/nope/e.png"
    return refused(ctx.cli(*args), "/proc/nope")


# ==============================================================================================================
# Concurrency
# ==============================================================================================================


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
    holder = hold_lock_shard(ctx, out, 0, 2)
    try:
        r = ctx.sub(*args, "--shard", "1/2")
    finally:
        release(holder)
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
    holder = hold_lock_shard(ctx, out, 1, 2)
    try:
        r = ctx.sub(*ctx.run_args(out))
    finally:
        release(holder)
    return refused(r, "in use", "2/2")


@attack("concurrency")
def run_while_a_tune_holds_the_folder(ctx: Context) -> Outcome:
    out = ctx.base / "x-tune-held"
    holder = hold_lock(ctx, out, "tune")
    try:
        r = ctx.sub(*ctx.run_args(out))
    finally:
        release(holder)
    return refused(r, "in use")


@attack("concurrency")
def merge_into_a_folder_a_run_holds(ctx: Context) -> Outcome:
    out = ctx.base / "x-merge-held"
    holder = hold_lock(ctx, out, "run")
    try:
        r = ctx.sub("merge", out, ctx.base / "ref")
    finally:
        release(holder)
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
    holder = hold_lock(ctx, out, "run")
    try:
        r = ctx.sub("report", out)
    finally:
        release(holder)
    return either(r, ("in use",), lambda: None)


# -- helpers for the folds attacks -------------------------------------------------------------------------------


def emobox_folder(ctx: Context, disjoint: bool = True) -> Path:
    """An EmoBox-style folder for the tiny ESD: two folds of two test speakers each (or one fold whose train and
    test share a speaker)."""
    out = ctx.base / ("emobox" if disjoint else "emobox-overlap")
    if out.exists():
        return out
    with open(ctx.base / "manifests/esd.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    speakers = sorted({r["speaker"] for r in rows})
    folds = [speakers[:2], speakers[2:]] if disjoint else [speakers[:2]]
    for n, test in enumerate(folds, 1):
        folder = out / f"fold_{n}"
        folder.mkdir(parents=True)
        for side in ("train", "test"):
            chosen = [r for r in rows if (r["speaker"] in test) == (side == "test")]
            if not disjoint and side == "train":
                chosen = rows[: len(rows) // 2]
            with open(folder / f"esd_{side}_fold_{n}.jsonl", "w") as f:
                for r in chosen:
                    f.write(json.dumps({"key": "esd-" + r["utterance_id"].replace("_", "-"), "wav": r["path"],
                                        "emo": r["emotion"], "dataset": "esd", "channel": 1}) + "\n")
    return out


# ==============================================================================================================


def fix_placeholders() -> None:
    """Attacks whose arguments need the base folder or a value no CLI string can hold."""
    for a in ATTACKS:
        if a.name == "too_many_backbone_layers":
            def fn(ctx: Context) -> Outcome:
                return refused(ctx.run(ctx.base / "b-layers99", "backbone.layers=99",
                                       pretune=ctx.base / "b-layers-pft"), "99")
            a.fn = fn
        if a.name == "nul_byte_in_out":
            def fn2(ctx: Context) -> Outcome:
                return refused(ctx.run(str(ctx.base / "b-nul") + "\x00x"), "out")
            a.fn = fn2


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
    fix_placeholders()
    attacks = [a for a in ATTACKS if not args.only or args.only in a.name]
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
