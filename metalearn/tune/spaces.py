"""Each method's tuning search space: an Optuna trial -> values of the method's config fields.

A method declares its space beside its config dataclass, in its registered algorithm module: a module-level
``search_space(trial) -> dict``, or, where one module serves registrations with different spaces (``protonet``
and ``protonet_proj``), ``SEARCH_SPACES``: registered name -> space, which wins over ``search_space``. The
modules never import Optuna: the trial is duck-typed (``suggest_float``, ``suggest_int``,
``suggest_categorical``). Spaces are small (a few values per field, around the hand-set defaults, which they
contain) so that an equal, small number of trials per method explores each of them comparably. Methods with
nothing to tune (majority, zeroshot), or too slow to tune (full_finetune), have no space.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from metalearn.fewshot.algorithms import REGISTRY

Space = Callable[[Any], dict]


def search_space(algorithm: str) -> Space | None:
    """The space of registered ``algorithm`` declared by its module (``SEARCH_SPACES[algorithm]``, else
    ``search_space``), or None when it has none."""
    module = importlib.import_module(f"metalearn.fewshot.algorithms.{REGISTRY[algorithm].module}")
    return getattr(module, "SEARCH_SPACES", {}).get(algorithm) or getattr(module, "search_space", None)


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
