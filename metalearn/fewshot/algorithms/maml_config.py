"""The hyperparameters of MAML, FOMAML, ANIL and Meta-SGD (:mod:`.maml`) and their tuning space.

Kept apart from the meta-learning code so that the config dataclasses and the search space sit side by side;
``maml`` re-exports every name here, and the registry looks them up there.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from metalearn.util.ranges import Rule, check_fields


@dataclasses.dataclass(frozen=True)
class MAMLConfig:
    """Hyperparameters of MAML (second order). The other configs add to these.

    Attributes:
        hidden: hidden sizes of the MLP head (() = a linear head).
        inner_lr: SGD step size of the inner loop (Meta-SGD: the initial per-parameter rates).
        inner_steps: inner steps per task during meta-training.
        test_steps: inner steps at test time (with validation data: the most steps considered, 0..test_steps).
        meta_lr: Adam step size on the meta-parameters.
        meta_batch: tasks per meta-step.
        predict_chunk: episodes adapted at once in ``predict`` (bounds memory; results do not depend on it).
    """

    hidden: tuple[int, ...] = (256,)
    inner_lr: float = 0.05
    inner_steps: int = 5
    test_steps: int = 10
    meta_lr: float = 1e-3
    meta_batch: int = 16
    predict_chunk: int = 256

    RANGES: ClassVar[dict[str, Rule]] = {
        "hidden": ">= 1", "inner_lr": "> 0", "inner_steps": ">= 1", "test_steps": ">= 0", "meta_lr": "> 0",
        "meta_batch": ">= 1", "predict_chunk": ">= 1"}

    def __post_init__(self) -> None:
        check_fields(self)


@dataclasses.dataclass(frozen=True)
class FOMAMLConfig(MAMLConfig):
    """First-order MAML: the same hyperparameters; inner gradients are detached."""


@dataclasses.dataclass(frozen=True)
class ANILConfig(MAMLConfig):
    """ANIL: only the last layer adapts. ``first_order`` detaches its inner gradients."""

    first_order: bool = False


@dataclasses.dataclass(frozen=True)
class MetaSGDConfig(MAMLConfig):
    """Meta-SGD: per-parameter inner rates, meta-learned, initialised to ``inner_lr``."""

    first_order: bool = False


def search_space(trial: Any) -> dict:
    """The tuning space of all four (an Optuna trial, duck-typed -> MAMLConfig fields); the head's width stays
    (capacity is compared, not tuned)."""
    return {"inner_lr": trial.suggest_float("inner_lr", 0.005, 0.2, log=True),
            "inner_steps": trial.suggest_categorical("inner_steps", [1, 3, 5]),
            "test_steps": trial.suggest_categorical("test_steps", [5, 10, 20]),
            "meta_lr": trial.suggest_float("meta_lr", 1e-4, 1e-2, log=True),
            "meta_batch": trial.suggest_categorical("meta_batch", [4, 8, 16])}
