"""Adaptation algorithms behind one interface (:class:`metalearn.fewshot.algorithms.base.Adapter`).

:func:`build_adapter` maps a name and its config fields onto a constructor, so a run's config lists
algorithms by name with their hyperparameters and the engine never branches on a method's name.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping

from metalearn.fewshot.algorithms.base import Adapter, TaskSampler
from metalearn.util.errors import MetalearnError

# name -> (module, class, config class, constructor takes `ways`, fixed config overrides)
ALGORITHMS: dict[str, tuple[str, str, str, bool, dict]] = {
    "finetune": ("finetune", "Finetune", "FinetuneConfig", False, {}),
    "simpleshot": ("simpleshot", "SimpleShot", "SimpleShotConfig", False, {}),
    "protonet": ("protonet", "ProtoNet", "ProtoNetConfig", False, {"projection": False}),
    "protonet_proj": ("protonet", "ProtoNet", "ProtoNetConfig", False, {"projection": True}),
    "maml": ("maml", "MAML", "MAMLConfig", True, {}),
    "fomaml": ("maml", "FOMAML", "FOMAMLConfig", True, {}),
    "anil": ("maml", "ANIL", "ANILConfig", True, {}),
    "metasgd": ("maml", "MetaSGD", "MetaSGDConfig", True, {}),
    "reptile": ("reptile", "Reptile", "ReptileConfig", True, {}),
}

__all__ = ["ALGORITHMS", "Adapter", "TaskSampler", "build_adapter", "config_class"]


def config_class(name: str) -> type:
    """The config dataclass of algorithm ``name``."""
    module, _, cfg_name, _, _ = _entry(name)
    return getattr(importlib.import_module(f"metalearn.fewshot.algorithms.{module}"), cfg_name)


def build_adapter(name: str, dim: int, ways: int, options: Mapping[str, object] | None = None, seed: int = 0,
                  device: str = "cpu") -> Adapter:
    """Algorithm ``name`` for ``dim``-d embeddings and ``ways``-way episodes, config fields from ``options``."""
    module, cls_name, _, takes_ways, fixed = _entry(name)
    cfg_cls = config_class(name)
    valid = {f.name for f in dataclasses.fields(cfg_cls)}
    unknown = sorted(set(options or {}) - valid)
    if unknown:
        raise MetalearnError(f"{name}: unknown option(s) {unknown}; valid: {', '.join(sorted(valid))}")
    cfg = cfg_cls(**{**(options or {}), **fixed})
    cls = getattr(importlib.import_module(f"metalearn.fewshot.algorithms.{module}"), cls_name)
    return cls(dim, ways, cfg, seed, device) if takes_ways else cls(dim, cfg, seed, device)


def _entry(name: str) -> tuple[str, str, str, bool, dict]:
    if name not in ALGORITHMS:
        raise MetalearnError(f"unknown algorithm {name!r}; expected one of: {', '.join(ALGORITHMS)}")
    return ALGORITHMS[name]
