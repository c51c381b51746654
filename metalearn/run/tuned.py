"""Tuned values in a run: the overlay's folds checked against the run's, and each fold's algorithm options.

The loader reads the overlay ``tuned.file`` names into ``cfg.tuned.folds`` (:mod:`metalearn.configs.overlay`),
so the run's config.yaml records the file and every value it used. Fold ``f``'s values apply to fold ``f``
only: they were chosen on fold ``f``'s validation speakers, never on its test speakers (a speaker tested in
one fold may validate another, whose values it then never meets).

Per fold, an overlay holds the fold-level winners and each variant's own (``variants.<variant>``, chosen on
that variant's features): a variant's own values win, method by method; a variant (or a caller that names
none) without its own entry for a method gets the fold-level one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

from metalearn.fewshot.algorithms import ALGORITHMS
from metalearn.run.config import ExperimentConfig, TunedConfig, TunedFold
from metalearn.run.grid import Fold
from metalearn.run.run_folder import as_dict
from metalearn.util.errors import MetalearnError

DIGEST_KEY = "sha256"  # the overlay's top-level key holding :func:`overlay_digest` of its ``tuned`` section


def overlay_digest(tuned: object) -> str:
    """SHA-256 of an overlay's ``tuned`` section (plain dicts, lists and scalars) as canonical JSON: ``tune``
    writes it beside the values, so a value edited afterwards is found when the overlay is read."""
    text = json.dumps(tuned, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def apply_tuned(cfg: ExperimentConfig, folds: list[Fold]) -> ExperimentConfig:
    """``cfg``, its ``tuned.folds`` (read from ``tuned.file`` by the loader) checked against the run's ``folds``."""
    tuned = cfg.tuned
    if tuned.file and not tuned.folds:
        raise MetalearnError(f"config key 'tuned.file': {tuned.file!r} was not read into tuned.folds; load the "
                             f"config with metalearn.load_config (or metalearn.configs.load.load_config)")
    if not tuned.folds:
        return cfg
    if len(tuned.folds) != len(folds):
        raise MetalearnError(f"config key 'tuned': tuned for {len(tuned.folds)} folds, the run has {len(folds)}")
    for t, f in zip(tuned.folds, folds, strict=True):
        if (t.fold, sorted(t.validation), sorted(t.meta_train)) != (f.fold, list(f.validation), list(f.meta_train)):
            raise MetalearnError(f"config key 'tuned': fold {f.fold} was tuned on validation {t.validation} / meta-"
                                 f"training {t.meta_train}, the run has {list(f.validation)} / {list(f.meta_train)} "
                                 f"(tune again with this config's speakers)")
        named = set(t.algorithms) | set(t.meta_steps)
        for own in _variants(t).values():
            named |= set(own.algorithms) | set(own.meta_steps)
        unknown = sorted(named - set(ALGORITHMS))
        if unknown:
            raise MetalearnError(f"config key 'tuned': fold {f.fold} names unknown algorithms {unknown}")
    return cfg


def _variants(tuned: TunedFold) -> dict:
    """The fold's per-variant entries (variant -> its algorithms and meta_steps)."""
    return tuned.variants


def _entry(cfg: ExperimentConfig, algorithm: str, fold: int, variant: str | None, field: str) -> tuple[bool, object]:
    """(found, value) of ``algorithm`` in the fold's tuned ``field`` (algorithms or meta_steps): the variant's own
    entry, else the fold-level one."""
    tuned = cfg.tuned.folds[fold]
    own = _variants(tuned).get(variant) if variant is not None else None
    for source in ((own,) if own is not None else ()) + (tuned,):
        values = getattr(source, field)
        if algorithm in values:
            return True, values[algorithm]
    return False, None


def tuned_values(cfg: ExperimentConfig, algorithm: str, fold: int, variant: str | None = None) -> dict:
    """The tuned config fields of ``algorithm`` in fold ``fold`` for ``variant`` (its own, else the fold's); {}
    without a tuned overlay or an entry."""
    if not cfg.tuned.folds:
        return {}
    found, values = _entry(cfg, algorithm, fold, variant, "algorithms")
    return dict(values) if found else {}


def options_for(cfg: ExperimentConfig, algorithm: str, fold: int, variant: str | None = None) -> dict:
    """The algorithm's config fields in fold ``fold`` for pretune ``variant``: its config section, then the tuned
    values (the variant's own, else the fold's; None: the fold's)."""
    return {**as_dict(getattr(cfg.algorithms, algorithm)), **tuned_values(cfg, algorithm, fold, variant)}


def meta_steps_for(cfg: ExperimentConfig, algorithm: str, fold: int, variant: str | None = None) -> int:
    """Meta-training (or training) steps of the algorithm in fold ``fold`` for pretune ``variant``: tuned (the
    variant's own, else the fold's; None: the fold's), else ``meta_train.steps``."""
    if cfg.tuned.folds:
        found, steps = _entry(cfg, algorithm, fold, variant, "meta_steps")
        return int(steps) if found else cfg.meta_train.steps
    return cfg.meta_train.steps


def with_values(cfg: ExperimentConfig, fold: Fold, algorithm: str, values: dict, meta_steps: int | None
                ) -> ExperimentConfig:
    """``cfg`` whose fold ``fold.fold`` runs ``algorithm`` with ``values`` (and ``meta_steps``), as a tuned run
    would: how a tuning trial is scored by the run's own code. Other folds get no tuned values."""
    folds = [TunedFold(f, [], [], {}, {}) for f in range(fold.fold + 1)]
    folds[fold.fold] = TunedFold(fold.fold, list(fold.validation), list(fold.meta_train), {algorithm: dict(values)},
                                 {} if meta_steps is None else {algorithm: meta_steps})
    return dataclasses.replace(cfg, tuned=TunedConfig("", folds))
