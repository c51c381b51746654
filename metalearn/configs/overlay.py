"""Tuned overlays: the file ``tune`` writes (``{tuned: {folds: [...]}}``), found by path or by name under the
preset folders, and read into a config's ``tuned.folds`` when the config is loaded.

Per fold, an overlay holds the validation and meta-training speakers it was tuned on (quoted: YAML 1.1 reads an
unquoted ``0011`` as the number 9, which is refused here) and the winners (algorithm -> config fields,
algorithm -> meta-training steps), fold-level and per variant (``variants.<variant>.algorithms`` and
``.meta_steps``; a variant's own win, see :mod:`metalearn.run.tuned`). :func:`metalearn.run.tuned.apply_tuned`
checks them against the run's own folds.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from metalearn.configs.preset_paths import preset_dirs
from metalearn.run.config import ExperimentConfig, TunedConfig, TunedFold
from metalearn.run.tuned import DIGEST_KEY, overlay_digest
from metalearn.util.errors import MetalearnError
from metalearn.util.yaml_ids import read_yaml


def tuned_path(name: str) -> Path:
    """A tuned overlay: the path as given when it exists, else ``name`` (``.yaml`` optional) under a preset folder."""
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
        data = read_yaml(path)
        extra = sorted(set(data) - {"tuned", DIGEST_KEY})
        if extra:
            raise MetalearnError(f"tuned overlay {path}: unexpected top-level key {extra[0]!r} (expected tuned and "
                                 f"{DIGEST_KEY})")
        _check_digest(path, data)
        _check_ids(path, data.get("tuned", {}))
        merged = OmegaConf.merge(OmegaConf.structured(TunedConfig), data.get("tuned", {}))
        folds = OmegaConf.to_object(merged).folds
    except (OSError, YAMLError, OmegaConfBaseException) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise MetalearnError(f"tuned overlay {path}: {first}") from None
    if not folds:
        raise MetalearnError(f"tuned overlay {path}: no folds under tuned.folds (expected what `tune` writes)")
    return folds


def _check_digest(path: Path, data: object) -> None:
    """Refuse an overlay whose values no longer match the digest ``tune`` wrote beside them (an overlay without
    one, written by hand, is read as it is)."""
    from omegaconf import OmegaConf

    if DIGEST_KEY not in data:
        return
    found = overlay_digest(OmegaConf.to_container(data.get("tuned", {})))
    if found != str(data[DIGEST_KEY]):
        raise MetalearnError(f"tuned overlay {path}: its values do not match its {DIGEST_KEY} (a value was changed "
                             f"after `tune` wrote it); run `tune` again, or delete the {DIGEST_KEY} line to use the "
                             f"edited values")


def _check_ids(path: Path, tuned: object) -> None:
    """Refuse a speaker id that YAML read as a number (an unquoted ``0011`` is 9): ids are text."""
    from omegaconf import DictConfig, ListConfig

    folds = tuned.get("folds") if isinstance(tuned, DictConfig) else None
    for i, fold in enumerate(folds if isinstance(folds, ListConfig) else []):
        for key in ("validation", "meta_train"):
            ids = fold.get(key) if isinstance(fold, DictConfig) else None
            for value in ids if isinstance(ids, ListConfig) else []:
                if not isinstance(value, str):
                    raise MetalearnError(f"tuned overlay {path}: tuned.folds[{i}].{key} holds {value!r}, a number; "
                                         f"quote speaker ids (e.g. '0011', which unquoted reads as 9)")


def with_overlay(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` with ``tuned.folds`` read from ``tuned.file`` when it names one (the run's config.yaml then
    records the file and every value it runs with)."""
    if not cfg.tuned.file:
        return cfg
    folds = read_overlay(tuned_path(cfg.tuned.file))
    return dataclasses.replace(cfg, tuned=dataclasses.replace(cfg.tuned, folds=folds))
