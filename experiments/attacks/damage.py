"""Damage attacks: a file of a run, a tuning, a variant, an export or a corpus edited, truncated or torn."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from .harness import Context, Outcome, accepted, attack, either, refused


def flip_byte(path: Path, where: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0x01
    path.write_bytes(bytes(data))


def truncate(path: Path, keep: float = 0.5) -> None:
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])


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


# ==============================================================================================================
# Case 6: misleading results
# ==============================================================================================================


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


def rerun_over_damaged(ctx: Context, folder: str, name: str, content: bytes) -> Outcome:
    """A copy of the reference run with ``name`` overwritten by ``content``, run again: one line naming the file,
    or the reference's results."""
    out = ctx.copy("ref", folder)
    (out / name).write_bytes(content)
    return either(ctx.run(out), (name,), lambda: ctx.same_as_ref(out))


@attack("damage")
def damaged_run_json(ctx: Context) -> Outcome:
    return rerun_over_damaged(ctx, "d-runjson", "run.json", b"{not json")


@attack("damage")
def damaged_learned_json(ctx: Context) -> Outcome:
    return rerun_over_damaged(ctx, "d-learned", "learned.json", b"[1, 2")


@attack("damage")
def damaged_skipped_jsonl(ctx: Context) -> Outcome:
    return rerun_over_damaged(ctx, "d-skipped", "skipped.jsonl", b"\xff\xfe{\n")


@attack("damage")
def damaged_timing_json(ctx: Context) -> Outcome:
    return rerun_over_damaged(ctx, "d-timing", "timing.json", b"{")


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
