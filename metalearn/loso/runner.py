"""``python -m metalearn run --config paper_b``: GEmo-CLAP's IEMOCAP leave-one-session-out, config-driven, resumable.

A preset with ``kind: loso`` fills :class:`LosoExperimentConfig`. For every (CLAP loss, held-out
session, seed), CLAP is trained on the other sessions and the held-out one is classified zero-shot
(nearest class prompt); WA and UA are recorded. Two encoders:

- ``frozen``: the backbone's mean-pooled hidden states come from the embedding cache (one extraction,
  shared with every run that embeds the same files with the same backbone), and only the CLAP heads
  train per fold (:func:`metalearn.loso.folds.heads_fold`), in seconds on a CPU;
- ``finetune``: per fold a fresh backbone and CLAP model train from audio
  (:func:`metalearn.clap.train.train_clap`), as GEmo-CLAP does.

Each finished fold is appended to ``records.jsonl`` (one write and an fsync); a rerun skips the folds
found there, and a killed run resumes without losing or duplicating one (a torn last line is cut off).
From the records: ``records.csv``, ``table.md`` and ``table.csv`` (the paper's layout, every mean with
its 95% CI and fold count), then a W&B run (offline by default) once every fold is done.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from metalearn.clap.model import ClapModel, with_loss
from metalearn.clap.train import ClapParts, train_clap
from metalearn.data.manifest import Utterance
from metalearn.features.backbones import build_backbone
from metalearn.loso.config import LosoExperimentConfig
from metalearn.loso.folds import (
    SessionSplit,
    dialogs_text,
    heads_fold,
    loso_fold,
    loso_table,
    loso_table_rows,
    session,
    sessions_of,
    train_sessions,
)
from metalearn.loso.paper import paper_table
from metalearn.run.run_folder import save_config, tracked_config
from metalearn.util.errors import MetalearnError
from metalearn.util.fileio import atomic_path, write_atomic, write_json
from metalearn.util.jsonl_log import JsonlLog
from metalearn.util.lock import run_lock
from metalearn.util.provenance import provenance, refuse_dirty_results
from metalearn.util.workers import run_forked

log = logging.getLogger(__name__)

RECORDS = "records.jsonl"
# One record per fold; "best_step" (frozen: the heads' step) or "best_epoch"/"epochs" (finetune) is None
# for the other encoder. "seconds" is wall time and differs between runs of the same fold.
RECORD_FIELDS = ("run", "loss", "session", "seed", "encoder", "wa", "ua", "n_test", "n_train", "n_dev",
                 "dev_wa", "dev_ua", "best_step", "best_epoch", "epochs", "train_sessions", "seconds")
VOLATILE = ("seconds", "run")
TEXT_NAMES = {"default": "all-MiniLM-L6-v2 (the embedded default)", "tiny": "tiny random BERT"}


# ---------------------------------------------------------------------------------------------- the fold log

def fold_key(r: dict) -> tuple[str, str, int]:
    """What identifies a fold: (CLAP loss, held-out session, seed)."""
    return r["loss"], r["session"], int(r["seed"])



# ---------------------------------------------------------------------------------------------- the run

@dataclass
class LosoResult:
    out: Path
    planned: int                # folds of the whole protocol
    done: int                   # folds with a record
    ran: int                    # folds this call ran
    complete: bool
    seconds: float              # this call's wall time
    table: str                  # table.md's table
    paths: dict[str, Path]
    tracking_hint: str | None


def run_loso_experiment(cfg: LosoExperimentConfig) -> LosoResult:
    """Run (or finish) every (loss, held-out session, seed) fold of ``cfg``; write the table from the log."""
    start = time.perf_counter()
    out = Path(cfg.out)
    device = _device(cfg)
    _check_root(cfg)
    refuse_dirty_results(out)
    with run_lock(out, (0, 1)):  # a second run into this folder is refused at once
        return _run_locked(cfg, out, device, start)


def _run_locked(cfg: LosoExperimentConfig, out: Path, device: torch.device | None, start: float) -> LosoResult:
    save_config(cfg, out)  # a folder holding another config's records is refused
    write_json(out / "run.json", provenance(cfg.device, kind="loso"))
    rows = target_rows(cfg)
    planned = [(v, s, seed) for v in cfg.losses for seed in cfg.seeds for s in sessions_of(rows)]
    fold_log = JsonlLog(out / RECORDS, fold_key, RECORD_FIELDS, VOLATILE)
    todo = [k for k in planned if k not in fold_log.done]
    if todo:
        log.info("%s: %d of %d folds to run (%s encoder)", cfg.name, len(todo), len(planned), cfg.encoder)
        run_folds(cfg, rows, todo, fold_log, out, device)
    records = [fold_log.records[k] for k in planned if k in fold_log.records]
    complete = len(records) == len(planned)
    paths = write_outputs(cfg, out, rows, records)
    hint = _track(cfg, out, records) if complete else None
    return LosoResult(out, len(planned), len(records), len(todo), complete, time.perf_counter() - start,
                      loso_table(records, cfg.losses), paths, hint)


def _device(cfg: LosoExperimentConfig) -> torch.device | None:
    """Where finetune trains (checked before any work); the frozen encoder's heads stay on the CPU."""
    from metalearn.util.devices import resolve_device

    if cfg.encoder != "finetune":
        return None
    try:
        return resolve_device(cfg.device)
    except MetalearnError as e:
        raise MetalearnError(f"config key 'device': {e}") from None


def _check_root(cfg: LosoExperimentConfig) -> None:
    """Before any work: a missing manifest needs an existing corpus root."""
    from metalearn.data.corpus_config import manifest_path

    target = cfg.data.target
    if not manifest_path(target, cfg.data.manifests_dir).is_file() and not (target.root and Path(target.root).is_dir()):
        raise MetalearnError(f"config key 'data.target.root': {target.root} is not a folder (the IEMOCAP root, "
                             f"holding Session1..Session5; set data.target.root=/path/to/IEMOCAP_full_release)")


def target_rows(cfg: LosoExperimentConfig) -> list[Utterance]:
    """The target manifest's utterances of ``data.target.classes`` (the manifest, read or written, keeps all)."""
    from metalearn.data.corpus_config import manifest_path, prepare_manifest

    target = cfg.data.target
    rows = prepare_manifest(dataclasses.replace(target, classes=None), cfg.data.manifests_dir)
    kept = [u for u in rows if u.emotion in target.classes]
    absent = [c for c in target.classes if not any(u.emotion == c for u in kept)]
    if absent:
        raise MetalearnError(f"config key 'data.target.classes': {absent} have no utterance in "
                             f"{manifest_path(target, cfg.data.manifests_dir)}")
    for u in kept:
        session(u)  # every speaker must name its session
    return kept


def run_folds(cfg: LosoExperimentConfig, rows: list[Utterance], todo: Sequence[tuple[str, str, int]],
              fold_log: JsonlLog, out: Path, device: torch.device | None) -> None:
    """Train and score each (loss, session, seed) of ``todo``, appending its record as it finishes.

    With the frozen encoder, the folds train their heads (one thread each) side by side in ``cfg.workers`` forked
    processes (:func:`metalearn.util.workers.run_forked`; 0: one per CPU); fine-tuning the encoder runs them one
    after another."""
    from metalearn.util.progress import progress

    x = None
    if cfg.encoder == "frozen":
        rows, x = frozen_features(cfg, rows)
    jobs = {str(i): functools.partial(fold_record, cfg, rows, x, fold, out, device) for i, fold in enumerate(todo)}
    with progress(len(todo), f"{cfg.name} folds", "fold") as bar:
        for _, record in run_forked(jobs, (cfg.workers or None) if x is not None else 1):
            fold_log.append(record)
            log.info("%s %s seed %d: WA %.3f UA %.3f (dev UA %.3f)", record["loss"], record["session"],
                     record["seed"], record["wa"], record["ua"], record["dev_ua"])
            bar.update(1)


def fold_record(cfg: LosoExperimentConfig, rows: list[Utterance], x: Tensor | None, key: tuple[str, str, int],
                out: Path, device: torch.device | None) -> dict:
    """One (loss, held-out session, seed) fold trained and scored: its record. ``x``: the frozen encoder's
    features [N, D] of ``rows`` (the heads train on them), else None (the encoder fine-tunes from audio)."""
    loss, held_out, seed = key
    start = time.perf_counter()
    fold = loso_fold(rows, held_out, cfg.heads.dev_fraction, seed)
    if x is not None:
        heads = dataclasses.replace(cfg.heads, seed=seed)
        scores = {**heads_fold(x, rows, fold, list(cfg.data.target.classes), with_loss(cfg.model, cfg.alphas, loss),
                               heads), "best_epoch": None, "epochs": None}
    else:
        curve = out / "curves" / f"{loss}-{held_out}-seed{seed}.jsonl"
        scores = finetune_fold(cfg, rows, fold, loss, seed, device, curve)
    return {"run": cfg.name, "loss": loss, "session": held_out, "seed": seed, "encoder": cfg.encoder, **scores,
            "train_sessions": train_sessions(rows, fold), "seconds": round(time.perf_counter() - start, 3)}


def frozen_features(cfg: LosoExperimentConfig, rows: list[Utterance]) -> tuple[list[Utterance], Tensor]:
    """(rows with an embedding, pooled hidden state ``model.layer`` [N, D]) from the embedding cache."""
    from metalearn.features.embeddings import extract
    from metalearn.features.featurize import select_features

    emb = extract(rows, build_backbone(cfg.backbone), cfg.embeddings)
    if emb.problems.problems:
        log.warning("%s: %s", cfg.data.target.corpus, emb.problems.summary())
    n_states = emb.values.shape[1]
    if not -n_states <= cfg.model.layer < n_states:
        raise MetalearnError(f"config key 'model.layer': {cfg.model.layer} is outside this backbone's {n_states} "
                             f"hidden states (0..{n_states - 1}, or negative from the end)")
    return emb.rows, select_features(emb.values, cfg.model.layer)


def finetune_fold(cfg: LosoExperimentConfig, rows: list[Utterance], fold: SessionSplit, loss: str, seed: int,
                  device: torch.device, curve: Path) -> dict:
    """A fresh backbone and CLAP model trained from audio on the fold; the held-out session scored once."""
    torch.manual_seed(seed)
    model = ClapModel(build_backbone(cfg.backbone), with_loss(cfg.model, cfg.alphas, loss))
    curve.parent.mkdir(parents=True, exist_ok=True)
    part = {name: [rows[i] for i in getattr(fold, name)] for name in ("train", "dev", "test")}
    fit = train_clap(model, ClapParts(part["train"], part["dev"], part["test"]), list(cfg.data.target.classes),
                     dataclasses.replace(cfg.train, seed=seed), device, curve_path=curve)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"wa": fit.test["wa"], "ua": fit.test["ua"], "n_test": fit.test["n"], "n_train": len(part["train"]),
            "n_dev": len(part["dev"]), "dev_wa": fit.dev["wa"], "dev_ua": fit.dev["ua"], "best_step": None,
            "best_epoch": fit.best_epoch, "epochs": fit.epochs}


# ---------------------------------------------------------------------------------------------- outputs

def write_outputs(cfg: LosoExperimentConfig, out: Path, rows: list[Utterance], records: list[dict]
                  ) -> dict[str, Path]:
    """``records.csv``, ``table.md`` (caption, the papers' numbers, this run's table) and ``table.csv`` from the
    fold records (atomically)."""
    paths = {"records": out / "records.csv", "table": out / "table.md", "table_csv": out / "table.csv"}
    _write_csv(paths["records"], records, RECORD_FIELDS)
    table_rows = loso_table_rows(records, cfg.losses)
    columns = list(table_rows[0]) if table_rows else ["method", "loss"]
    _write_csv(paths["table_csv"], table_rows, columns)
    write_atomic(paths["table"], "\n\n".join([*caption(cfg, rows, records), *paper_table(),
                                               loso_table(records, cfg.losses)]) + "\n")
    return paths


def caption(cfg: LosoExperimentConfig, rows: list[Utterance], records: list[dict]) -> list[str]:
    """table.md's title and the paragraph saying what the numbers are."""
    classes = cfg.data.target.classes
    counts = ", ".join(f"{c} {sum(u.emotion == c for u in rows)}" for c in classes)
    encoder = (f"frozen encoder (heads only, {cfg.heads.steps} steps, the step kept by dev UA)"
               if cfg.encoder == "frozen" else
               f"encoder fine-tuned from audio ({cfg.train.max_epochs} epochs at most, the epoch kept by dev UA)")
    backbone = "Whisper base (the embedded default)" if cfg.backbone.source == "default" else \
        f"{cfg.backbone.source} ({cfg.backbone.family})"
    if cfg.backbone.layers is not None:
        backbone += f" cut to its first {cfg.backbone.layers} transformer layers (backbone.layers)"
    text = TEXT_NAMES.get(cfg.model.text_source, cfg.model.text_source)
    dialogs = dialogs_text(cfg.data.target.options, rows)
    return [f"# {cfg.name}: GEmo-CLAP, IEMOCAP leave-one-session-out, {len(classes)} classes",
            f"{len(rows)} utterances ({counts}) of {dialogs}; backbone {backbone}, {encoder}; text tower {text}, "
            f"prompt \"{cfg.model.prompt}\"; dev = {cfg.heads.dev_fraction:g} of the training sessions' utterances; "
            f"seeds {cfg.seeds}; {len(records)} fold records. Zero-shot prediction (nearest class prompt). WA = "
            f"accuracy, UA = mean per-class recall (%), chance UA {100 / len(classes):.0f}%. "
            f"Mean = over folds (held-out sessions), ± its 95% Student-t CI; folds = their count; a session "
            f"with several seeds shows their mean ± 95% CI (n)."]


def _write_csv(path: Path, rows: Sequence[dict], columns: Sequence[str]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _track(cfg: LosoExperimentConfig, out: Path, records: list[dict]) -> str | None:
    """Mirror the fold records and the table to W&B (offline by default; a failure is one warning)."""
    from metalearn.report.tracking import Tracker

    config = tracked_config(cfg)
    table_rows = loso_table_rows(records, cfg.losses)
    with Tracker(out, cfg.name, config, cfg.tracking) as tracker:
        tracker.log_table("folds", records, RECORD_FIELDS)
        if table_rows:
            tracker.log_table("loso_table", table_rows, list(table_rows[0]))
        summary = {f"{r['loss']}/{k}": r[k] for r in table_rows for k in ("wa_mean", "ua_mean", "wa_ci95",
                                                                             "ua_ci95", "folds")}
        tracker.log(summary)
        tracker.log_summary(summary)
        return tracker.finish()


def main(cfg: LosoExperimentConfig, shard: str | None = None, prepare: bool = False) -> int:
    """``python -m metalearn run`` for a loso config: run (or finish) every fold, print the table."""
    if shard or prepare:
        raise MetalearnError(f"--shard/--prepare split a few-shot grid; {cfg.name} is a loso experiment "
                             f"(kind: loso): run it without them (a rerun resumes its unfinished folds)")
    result = run_loso_experiment(cfg)
    print(result.table)
    state = "complete" if result.complete else "incomplete (run the command again to finish)"
    print(f"{result.done}/{result.planned} folds ({result.ran} run now, {result.seconds:.1f} s), {state}; "
          f"results in {result.out}/")
    for name, path in result.paths.items():
        print(f"  {name}: {path}")
    if result.tracking_hint:
        print(result.tracking_hint)
    return 0
