"""Experiment kinds: a preset's top-level ``kind`` names its schema and its cross-field checks, in one table.

``fewshot`` (the default) is the few-shot grid (:mod:`metalearn.run`), with the ``launcher`` section that
:mod:`metalearn.launch` reads; ``loso`` is GEmo-CLAP's IEMOCAP leave-one-session-out protocol
(:mod:`metalearn.loso`). Which runner a kind starts is the entry points' business (:mod:`metalearn.api`,
:mod:`metalearn.cli`), so loading a config never imports a runner.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from metalearn.configs.overlay import with_overlay
from metalearn.launch.config import LauncherConfig
from metalearn.loso.config import LosoExperimentConfig
from metalearn.loso.config import validate as validate_loso
from metalearn.run.config import ExperimentConfig, validate
from metalearn.util.errors import MetalearnError


@dataclass
class FewshotJob(ExperimentConfig):
    """A few-shot grid and where ``launch`` submits it: the launcher section never changes a number (run
    folders compare configs without it), so the science schema (:class:`ExperimentConfig`) does not hold it."""

    launcher: LauncherConfig = field(default_factory=LauncherConfig)


@dataclass(frozen=True)
class Kind:
    config: type                                  # the config dataclass a preset of this kind fills
    validate: Callable[[object], None]            # cross-field checks, one line each
    resolve: Callable[[object], object] = lambda cfg: cfg  # what loading adds once checked (a tuned overlay)


KINDS: dict[str, Kind] = {
    "fewshot": Kind(FewshotJob, validate, with_overlay),
    "loso": Kind(LosoExperimentConfig, validate_loso),
}


def kind_of(name: str) -> Kind:
    if name not in KINDS:
        raise MetalearnError(f"config key 'kind': {name!r} is not one of {', '.join(KINDS)}")
    return KINDS[name]


def kind_name(cfg: object) -> str:
    """The kind ``cfg`` is a config of (``fewshot`` for a config without a ``kind``); an unknown kind is a one-line
    error."""
    name = str(getattr(cfg, "kind", "fewshot"))
    kind_of(name)
    return name
