"""Every registered algorithm builds from its name and config, implements the interface, and beats chance."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from metalearn.fewshot.algorithms import (
    ALGORITHMS,
    REGISTRY,
    Adapter,
    AdapterBase,
    AdapterSpec,
    adapter_class,
    build_adapter,
    config_class,
)
from metalearn.run.config import AlgorithmsConfig
from metalearn.util.errors import MetalearnError
from metalearn.util.metrics import episode_metrics


class Tasks:
    """5-way tasks whose class means are a shared prototype plus a per-task offset."""

    def __init__(self, dim=16, ways=5, shots=5, queries=5, seed=0):
        self.g = torch.Generator().manual_seed(seed)
        self.protos = 3 * torch.randn(ways, dim, generator=self.g)
        self.dim, self.ways, self.shots, self.queries = dim, ways, shots, queries

    def sample(self, n):
        offset = torch.randn(n, 1, self.dim, generator=self.g)
        sy = torch.arange(self.ways).repeat_interleave(self.shots).expand(n, -1).clone()
        qy = torch.arange(self.ways).repeat_interleave(self.queries).expand(n, -1).clone()
        sx = self.protos[sy] + offset + torch.randn(n, sy.shape[1], self.dim, generator=self.g)
        qx = self.protos[qy] + offset + torch.randn(n, qy.shape[1], self.dim, generator=self.g)
        return sx, sy, qx, qy


SMALL = {"hidden": (32,), "meta_batch": 4}  # keeps the MLP-head methods fast; defaults are tested elsewhere
ON_EMBEDDINGS = [n for n in ALGORITHMS if adapter_class(n).inputs == "embeddings" and not adapter_class(n).needs_prior
                 and n != "majority"]


def test_every_registration_declares_the_interface():
    for name, entry in REGISTRY.items():
        cls, cfg = adapter_class(name), config_class(name)
        assert issubclass(cls, AdapterBase) and dataclasses.is_dataclass(cfg), name
        assert cls.inputs in ("embeddings", "audio"), name
        assert set(entry.fixed) <= {f.name for f in dataclasses.fields(cfg)}, name
    fields = {f.name for f in dataclasses.fields(AlgorithmsConfig)}
    assert fields == {"run", "only", *REGISTRY}  # the experiment config's section comes from the registry


@pytest.mark.parametrize("name", ON_EMBEDDINGS)
def test_every_algorithm_builds_and_beats_chance(name):
    torch.manual_seed(0)
    tasks = Tasks()
    options = SMALL if isinstance(getattr(config_class(name)(), "hidden", None), tuple) else {}  # MLP heads
    adapter = build_adapter(name, AdapterSpec(dim=16, ways=5), options)
    assert isinstance(adapter, Adapter) and adapter.name == name
    adapter.meta_train(tasks, 10)
    sx, sy, qx, qy = tasks.sample(8)
    logits = adapter.predict(sx, sy, qx, 5)
    assert logits.shape == (8, 25, 5)
    assert (logits.argmax(-1) == qy).float().mean() > 0.6  # chance is 0.2


def test_majority_predicts_the_support_majority():
    """On a balanced binary support it answers the lowest label: 80% accuracy on 1 target : 4 others."""
    adapter = build_adapter("majority", AdapterSpec(dim=3, ways=2))
    sy = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]])  # balanced (tie -> 0), then mostly 1
    logits = adapter.predict(torch.zeros(2, 4, 3), sy, torch.zeros(2, 5, 3), 2)
    assert logits.argmax(-1).tolist() == [[0] * 5, [1] * 5]
    y = torch.tensor([[1, 0, 0, 0, 0]])
    scores = episode_metrics(logits[:1], y)
    assert scores["accuracy"].item() == pytest.approx(0.8)
    assert scores["macro_f1"].item() == pytest.approx(0.8 / 1.8)  # F1 0.889 for "other", 0 for the target


def test_unknown_names_and_options_are_one_line_errors():
    spec = AdapterSpec(16, 5)
    with pytest.raises(MetalearnError, match="unknown algorithm 'mamll'"):
        build_adapter("mamll", spec)
    with pytest.raises(MetalearnError, match=r"finetune: unknown option\(s\) \['step'\]; valid: .*steps"):
        build_adapter("finetune", spec, {"step": 3})
    assert build_adapter("finetune", spec, {"steps": 7}).cfg.steps == 7
    with pytest.raises(MetalearnError, match="needs audio inputs"):
        build_adapter("full_finetune", spec)
