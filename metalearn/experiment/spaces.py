"""Each method's tuning search space: an Optuna trial -> values of the method's config fields.

A method declares its space beside its config dataclass, as a module-level ``search_space(trial) -> dict``
in its algorithm module (``finetune``, ``transfer``). For the methods whose modules do not declare one yet
(their files are being reworked), the spaces below stand in, keyed by registered name; a module's own
function always wins. Spaces are small (a few values per field, around the hand-set defaults, which they
contain) so that an equal, small number of trials per method explores each of them comparably. Methods with
nothing to tune (majority, zeroshot), or too slow to tune (full_finetune), have no space.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from metalearn.fewshot.algorithms import REGISTRY

Space = Callable[[Any], dict]


def _simpleshot(trial: Any) -> dict:
    return {"center": trial.suggest_categorical("center", ["support", "base", "none"])}


def _protonet(trial: Any) -> dict:
    distance = trial.suggest_categorical("distance", ["sqeuclidean", "cosine"])
    scale = trial.suggest_categorical("cosine_scale", [5.0, 10.0, 20.0]) if distance == "cosine" else 10.0
    return {"distance": distance, "cosine_scale": scale}


def _protonet_proj(trial: Any) -> dict:
    return {"lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
            "proj_dim": trial.suggest_categorical("proj_dim", [64, 128, 256]),
            "hidden": trial.suggest_categorical("hidden", [0, 256]),
            "meta_batch": trial.suggest_categorical("meta_batch", [8, 16, 32])}


def _maml(trial: Any) -> dict:
    """MAML, FOMAML, ANIL and Meta-SGD (the head's width stays; capacity is compared, not tuned)."""
    return {"inner_lr": trial.suggest_float("inner_lr", 0.005, 0.2, log=True),
            "inner_steps": trial.suggest_categorical("inner_steps", [1, 3, 5]),
            "test_steps": trial.suggest_categorical("test_steps", [5, 10, 20]),
            "meta_lr": trial.suggest_float("meta_lr", 1e-4, 1e-2, log=True),
            "meta_batch": trial.suggest_categorical("meta_batch", [4, 8, 16])}


def _reptile(trial: Any) -> dict:
    return {"inner_lr": trial.suggest_float("inner_lr", 3e-4, 3e-2, log=True),
            "inner_steps": trial.suggest_categorical("inner_steps", [3, 5, 10]),
            "test_steps": trial.suggest_categorical("test_steps", [5, 10, 20]),
            "meta_lr": trial.suggest_float("meta_lr", 0.1, 1.0, log=True),
            "meta_batch": trial.suggest_categorical("meta_batch", [4, 8, 16])}


STAND_INS: dict[str, Space] = {"simpleshot": _simpleshot, "protonet": _protonet, "protonet_proj": _protonet_proj,
                               "maml": _maml, "fomaml": _maml, "anil": _maml, "metasgd": _maml, "reptile": _reptile}


def search_space(algorithm: str) -> Space | None:
    """The method's search space: its module's ``search_space``, else the stand-in here, else None."""
    module = importlib.import_module(f"metalearn.fewshot.algorithms.{REGISTRY[algorithm].module}")
    return getattr(module, "search_space", None) or STAND_INS.get(algorithm)


class _FirstChoice:
    """A stand-in trial answering every suggestion with its first option (to learn a space's fields)."""

    def suggest_float(self, name: str, low: float, high: float, **_: Any) -> float:
        return low

    def suggest_int(self, name: str, low: int, high: int, **_: Any) -> int:
        return low

    def suggest_categorical(self, name: str, choices: list) -> Any:
        return choices[0]


def space_fields(space: Space) -> list[str]:
    """The config fields a space sets."""
    return sorted(space(_FirstChoice()))
