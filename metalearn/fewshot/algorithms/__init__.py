"""Every adaptation method, registered in one table, behind one interface (:mod:`.base`).

A registration names the module, the adapter class and its config dataclass (in the same module),
plus any config values the registration fixes (``protonet_proj`` is ProtoNet with its projection).
What a method needs from the runner (embeddings or audio, a CLAP prompt prior, meta-training tasks)
it declares on its class; the experiment config's ``algorithms`` section is assembled from this table.
Adding a method is one new module plus one line here.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from metalearn.fewshot.algorithms.base import Adapter, AdapterBase, AdapterSpec, AudioInputs, EpisodeBatch, TaskSampler
from metalearn.util.errors import MetalearnError


@dataclass(frozen=True)
class Registration:
    module: str                                  # metalearn.fewshot.algorithms.<module>
    adapter: str                                 # the adapter class (a subclass of AdapterBase)
    config: str                                  # its config dataclass
    fixed: dict = field(default_factory=dict)    # config values this registration fixes


REGISTRY: dict[str, Registration] = {
    "majority": Registration("majority", "Majority", "MajorityConfig"),
    "finetune": Registration("finetune", "Finetune", "FinetuneConfig"),
    "simpleshot": Registration("simpleshot", "SimpleShot", "SimpleShotConfig"),
    "protonet": Registration("protonet", "ProtoNet", "ProtoNetConfig", {"projection": False}),
    "protonet_proj": Registration("protonet", "ProtoNet", "ProtoNetConfig", {"projection": True}),
    "maml": Registration("maml", "MAML", "MAMLConfig"),
    "fomaml": Registration("maml", "FOMAML", "FOMAMLConfig"),
    "anil": Registration("maml", "ANIL", "ANILConfig"),
    "metasgd": Registration("maml", "MetaSGD", "MetaSGDConfig"),
    "reptile": Registration("reptile", "Reptile", "ReptileConfig"),
    "zeroshot": Registration("text_head", "ZeroShot", "ZeroShotConfig"),
    "texthead": Registration("text_head", "TextHead", "FinetuneConfig"),
    "full_finetune": Registration("full_finetune", "FullFinetune", "FullFinetuneConfig"),
    "transfer": Registration("transfer", "Transfer", "TransferConfig"),
}
ALGORITHMS = tuple(REGISTRY)

__all__ = ["ALGORITHMS", "REGISTRY", "Adapter", "AdapterBase", "AdapterSpec", "AudioInputs", "EpisodeBatch",
           "TaskSampler", "adapter_class", "build_adapter", "config_class"]


def _entry(name: str) -> Registration:
    if name not in REGISTRY:
        raise MetalearnError(f"unknown algorithm {name!r}; expected one of: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def _module(name: str):
    return importlib.import_module(f"metalearn.fewshot.algorithms.{_entry(name).module}")


def config_class(name: str) -> type:
    """The config dataclass of algorithm ``name``."""
    return getattr(_module(name), _entry(name).config)


def adapter_class(name: str) -> type[AdapterBase]:
    """The adapter class of algorithm ``name``: its declarations (inputs, needs_prior, ...) are class attributes."""
    return getattr(_module(name), _entry(name).adapter)


def build_adapter(name: str, spec: AdapterSpec, options: Mapping[str, object] | None = None) -> AdapterBase:
    """Algorithm ``name`` built from ``spec`` with config fields from ``options`` (unknown fields are an error)."""
    cfg_cls = config_class(name)
    valid = {f.name for f in dataclasses.fields(cfg_cls)}
    unknown = sorted(set(options or {}) - valid)
    if unknown:
        raise MetalearnError(f"{name}: unknown option(s) {unknown}; valid: {', '.join(sorted(valid))}")
    cfg = cfg_cls(**{**(options or {}), **_entry(name).fixed})
    return adapter_class(name).from_spec(spec, cfg)
