"""Each method's tuning search space: an Optuna trial -> values of the method's config fields.

A method declares its space beside its config dataclass, in its registered algorithm module: a module-level
``search_space(trial) -> dict``, or, where one module serves registrations with different spaces (``protonet``
and ``protonet_proj``), ``SEARCH_SPACES``: registered name -> space, which wins over ``search_space``. The
modules never import Optuna: the trial is duck-typed (``suggest_float``, ``suggest_int``,
``suggest_categorical``). Spaces are small (a few values per field, around the hand-set defaults, which they
contain) so that an equal, small number of trials per method explores each of them comparably. Methods with
nothing to tune (majority, zeroshot), or too slow to tune (full_finetune), have no space.

A method too slow for the common budget may declare a smaller one beside its space: ``TUNING_TRIALS``, an int
(or registered name -> int): its studies then count ``min(tune.trials, TUNING_TRIALS)`` trials
(:func:`trials_for`), and ``tuning.md`` says so.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from metalearn.fewshot.algorithms import REGISTRY
from metalearn.util.errors import MetalearnError

Space = Callable[[Any], dict]


def search_space(algorithm: str) -> Space | None:
    """The space of registered ``algorithm`` declared by its module (``SEARCH_SPACES[algorithm]``, else
    ``search_space``), or None when it has none."""
    module = importlib.import_module(f"metalearn.fewshot.algorithms.{REGISTRY[algorithm].module}")
    return getattr(module, "SEARCH_SPACES", {}).get(algorithm) or getattr(module, "search_space", None)


def declared_trials(algorithm: str) -> int | None:
    """The smaller tuning budget registered ``algorithm``'s module declares (``TUNING_TRIALS``), or None."""
    module = importlib.import_module(f"metalearn.fewshot.algorithms.{REGISTRY[algorithm].module}")
    declared = getattr(module, "TUNING_TRIALS", None)
    if isinstance(declared, dict):
        declared = declared.get(algorithm)
    if declared is not None and (not isinstance(declared, int) or declared < 1):
        raise MetalearnError(f"{module.__name__}.TUNING_TRIALS: {declared!r} for {algorithm}; expected an int >= 1")
    return declared


def trials_for(algorithm: str, trials: int) -> int:
    """The trials every study of ``algorithm`` counts: ``trials`` (``tune.trials``), or the smaller budget its
    module declares."""
    declared = declared_trials(algorithm)
    return trials if declared is None else min(trials, declared)


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
