"""Search spaces live in the algorithm modules, beside their config dataclasses, and never import Optuna."""

from __future__ import annotations

import ast
import dataclasses
import importlib
from pathlib import Path
from typing import Any

import pytest

from metalearn.fewshot.algorithms import ALGORITHMS, REGISTRY, config_class
from metalearn.tune.spaces import declared_trials, search_space, space_fields, trials_for
from metalearn.util.errors import MetalearnError

# Registered algorithms with options worth tuning; the rest have nothing to tune or are too slow to tune.
TUNABLE = {"finetune", "simpleshot", "protonet", "protonet_proj", "maml", "fomaml", "anil", "metasgd", "reptile",
           "transfer", "full_finetune"}
ALGORITHM_DIR = Path(importlib.import_module("metalearn.fewshot.algorithms").__file__).parent


class _LastChoice:
    """A duck-typed trial (no Optuna): every suggestion's last option."""

    def suggest_float(self, name: str, low: float, high: float, **_: Any) -> float:
        return high

    def suggest_int(self, name: str, low: int, high: int, **_: Any) -> int:
        return high

    def suggest_categorical(self, name: str, choices: list) -> Any:
        return choices[-1]


def test_exactly_the_tunable_algorithms_have_a_space() -> None:
    assert {a for a in ALGORITHMS if search_space(a) is not None} == TUNABLE


@pytest.mark.parametrize("name", sorted(TUNABLE))
def test_each_space_is_declared_in_its_own_module_over_its_config_fields(name: str) -> None:
    space = search_space(name)
    module = importlib.import_module(f"metalearn.fewshot.algorithms.{REGISTRY[name].module}")
    assert getattr(module, "SEARCH_SPACES", {}).get(name, getattr(module, "search_space", None)) is space
    owner = importlib.import_module(space.__module__)  # where it is defined: the module or its config module
    config = config_class(name)
    assert owner is module or owner.__name__ == config.__module__
    assert getattr(owner, config.__name__) is config  # beside its config dataclass
    fields = {f.name for f in dataclasses.fields(config)}
    for trial in (_LastChoice(), None):
        values = space(trial) if trial is not None else dict.fromkeys(space_fields(space))
        assert set(values) <= fields - set(REGISTRY[name].fixed), (name, set(values) - fields)


def test_the_two_protonet_registrations_tune_different_things() -> None:
    assert set(space_fields(search_space("protonet"))) == {"distance", "cosine_scale"}
    assert set(space_fields(search_space("protonet_proj"))) == {"lr", "proj_dim", "hidden", "meta_batch"}


@pytest.mark.parametrize("path", sorted(ALGORITHM_DIR.glob("*.py")), ids=lambda p: p.name)
def test_algorithm_modules_do_not_import_optuna(path: Path) -> None:
    for node in ast.walk(ast.parse(path.read_text())):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        assert not any(n.split(".")[0] == "optuna" for n in names), f"{path.name} imports optuna"


def test_a_method_may_declare_a_smaller_tuning_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    module = importlib.import_module(f"metalearn.fewshot.algorithms.{REGISTRY['finetune'].module}")
    assert declared_trials("finetune") is None and trials_for("finetune", 20) == 20
    monkeypatch.setattr(module, "TUNING_TRIALS", 5, raising=False)
    assert (declared_trials("finetune"), trials_for("finetune", 20), trials_for("finetune", 3)) == (5, 5, 3)
    monkeypatch.setattr(module, "TUNING_TRIALS", {"finetune": 4, "other": 1}, raising=False)
    assert trials_for("finetune", 20) == 4
    monkeypatch.setattr(module, "TUNING_TRIALS", 0, raising=False)
    with pytest.raises(MetalearnError, match="TUNING_TRIALS: 0 for finetune; expected an int >= 1"):
        trials_for("finetune", 20)
