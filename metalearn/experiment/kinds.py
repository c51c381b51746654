"""Experiment kinds: a preset's top-level ``kind`` names its schema, its checks and its runner, in one table.

``fewshot`` (the default) is the few-shot grid (:mod:`metalearn.experiment.runner`); ``loso`` is
GEmo-CLAP's IEMOCAP leave-one-session-out protocol (:mod:`metalearn.experiment.loso`). The CLI and the
config loader dispatch on this table only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from metalearn.experiment import loso, runner
from metalearn.experiment.config import ExperimentConfig, validate
from metalearn.experiment.loso_config import LosoExperimentConfig
from metalearn.experiment.loso_config import validate as validate_loso
from metalearn.util.errors import MetalearnError


@dataclass(frozen=True)
class Kind:
    config: type                                  # the config dataclass a preset of this kind fills
    validate: Callable[[object], None]            # cross-field checks, one line each
    main: Callable[[object, str | None, bool], int]  # run it from the CLI: (cfg, shard "I/N" or None, prepare)


KINDS: dict[str, Kind] = {
    "fewshot": Kind(ExperimentConfig, validate, runner.main),
    "loso": Kind(LosoExperimentConfig, validate_loso, loso.main),
}


def kind_of(name: str) -> Kind:
    if name not in KINDS:
        raise MetalearnError(f"config key 'kind': {name!r} is not one of {', '.join(KINDS)}")
    return KINDS[name]


def kind_of_config(cfg: object) -> Kind:
    """The kind whose schema ``cfg`` is."""
    return kind_of(getattr(cfg, "kind", "fewshot"))
