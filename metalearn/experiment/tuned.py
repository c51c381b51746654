"""Tuned values in a run: the overlay ``tune`` writes, read into the config, and each fold's algorithm options.

The overlay is a config fragment ``{tuned: {folds: [...]}}``: per fold, the validation and meta-training
speakers it was tuned on and the winners (algorithm -> config fields, algorithm -> meta-training steps).
``tuned.file`` names it; :func:`apply_tuned` reads it into ``cfg.tuned.folds``, so the run's config.yaml
records the file and every value it used. Fold ``f``'s values apply to fold ``f`` only: they were chosen on
fold ``f``'s validation speakers, never on its test speakers (a speaker tested in one fold may validate
another, whose values it then never meets).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from metalearn.experiment.config import ExperimentConfig, TunedConfig, TunedFold
from metalearn.experiment.grid import Fold
from metalearn.experiment.run_folder import as_dict
from metalearn.fewshot.algorithms import ALGORITHMS
from metalearn.util.errors import MetalearnError


def tuned_path(name: str) -> Path:
    """A tuned overlay: the path as given when it exists, else ``name`` (``.yaml`` optional) under a preset folder."""
    from metalearn.experiment.load import preset_dirs

    path = Path(name)
    if path.is_file():
        return path
    stem = name.removesuffix(".yaml").removesuffix(".yml")
    for folder in preset_dirs():
        if (folder / f"{stem}.yaml").is_file():
            return folder / f"{stem}.yaml"
    raise MetalearnError(f"config key 'tuned.file': {name!r} is neither a file nor a tuned overlay under the presets "
                         f"(e.g. tuned/demo; write one with `python -m metalearn tune`)")


def read_overlay(path: Path) -> list[TunedFold]:
    """The ``tuned.folds`` of an overlay file, checked against the schema (one-line errors naming the file)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException
    from yaml import YAMLError

    try:
        data = OmegaConf.load(path)
        extra = sorted(set(data) - {"tuned"})
        if extra:
            raise MetalearnError(f"tuned overlay {path}: unexpected top-level key {extra[0]!r} (expected only tuned)")
        merged = OmegaConf.merge(OmegaConf.structured(TunedConfig), data.get("tuned", {}))
        return OmegaConf.to_object(merged).folds
    except (OSError, YAMLError, OmegaConfBaseException) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise MetalearnError(f"tuned overlay {path}: {first}") from None


def apply_tuned(cfg: ExperimentConfig, folds: list[Fold]) -> ExperimentConfig:
    """``cfg`` with ``tuned.folds`` read from ``tuned.file`` (when set), checked against the run's ``folds``."""
    tuned = cfg.tuned
    if tuned.file:
        tuned = dataclasses.replace(tuned, folds=read_overlay(tuned_path(tuned.file)))
    if not tuned.folds:
        return dataclasses.replace(cfg, tuned=tuned)
    if len(tuned.folds) != len(folds):
        raise MetalearnError(f"config key 'tuned': tuned for {len(tuned.folds)} folds, the run has {len(folds)}")
    for t, f in zip(tuned.folds, folds, strict=True):
        if (t.fold, sorted(t.validation), sorted(t.meta_train)) != (f.fold, list(f.validation), list(f.meta_train)):
            raise MetalearnError(f"config key 'tuned': fold {f.fold} was tuned on validation {t.validation} / meta-"
                                 f"training {t.meta_train}, the run has {list(f.validation)} / {list(f.meta_train)} "
                                 f"(tune again with this config's speakers)")
        unknown = sorted((set(t.algorithms) | set(t.meta_steps)) - set(ALGORITHMS))
        if unknown:
            raise MetalearnError(f"config key 'tuned': fold {f.fold} names unknown algorithms {unknown}")
    return dataclasses.replace(cfg, tuned=tuned)


def options_for(cfg: ExperimentConfig, algorithm: str, fold: int) -> dict:
    """The algorithm's config fields in fold ``fold``: its config section, then the fold's tuned values."""
    options = as_dict(getattr(cfg.algorithms, algorithm))
    if cfg.tuned.folds:
        options.update(cfg.tuned.folds[fold].algorithms.get(algorithm, {}))
    return options


def meta_steps_for(cfg: ExperimentConfig, algorithm: str, fold: int) -> int:
    """Meta-training (or training) steps of the algorithm in fold ``fold``: tuned, else ``meta_train.steps``."""
    if cfg.tuned.folds:
        return int(cfg.tuned.folds[fold].meta_steps.get(algorithm, cfg.meta_train.steps))
    return cfg.meta_train.steps


def with_values(cfg: ExperimentConfig, fold: Fold, algorithm: str, values: dict, meta_steps: int | None
                ) -> ExperimentConfig:
    """``cfg`` whose fold ``fold.fold`` runs ``algorithm`` with ``values`` (and ``meta_steps``), as a tuned run
    would: how a tuning trial is scored by the run's own code. Other folds get no tuned values."""
    folds = [TunedFold(f, [], [], {}, {}) for f in range(fold.fold + 1)]
    folds[fold.fold] = TunedFold(fold.fold, list(fold.validation), list(fold.meta_train), {algorithm: dict(values)},
                                 {} if meta_steps is None else {algorithm: meta_steps})
    return dataclasses.replace(cfg, tuned=TunedConfig("", folds))
