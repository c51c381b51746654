"""Bad-input attacks: a wrong value, key, path, preset or argument handed to a command."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

from .harness import ATTACKS, Context, Outcome, accepted, attack, either, refused


def speakers_of(folder: Path) -> set[str]:
    with open(folder / "trials.csv", newline="") as f:
        return {row["speaker"] for row in csv.DictReader(f)}


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


@attack("bad input", "6")
def push_to_hub_with_a_bad_repo_id(ctx: Context) -> Outcome:
    out = ctx.base / "c6-push"
    o = refused(ctx.cli("export-variant", ctx.base / "pft/pft-iemocap", out, "--push-to-hub", "not a repo"),
                "not a repo")
    if o.outcome == "right" and out.exists():
        return Outcome("silent", f"refused after writing the export: {o.message}")
    return o


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


fix_placeholders()
