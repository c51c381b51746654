"""Every registered algorithm builds from its name and config, implements the interface, and beats chance."""

from __future__ import annotations

import pytest
import torch

from metalearn.fewshot.algorithms import ALGORITHMS, Adapter, build_adapter
from metalearn.util.errors import MetalearnError


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


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_every_algorithm_builds_and_beats_chance(name):
    torch.manual_seed(0)
    tasks = Tasks()
    options = SMALL if ALGORITHMS[name][3] else {}
    adapter = build_adapter(name, dim=16, ways=5, options=options, seed=0)
    assert isinstance(adapter, Adapter) and adapter.name == name
    adapter.meta_train(tasks, 10)
    sx, sy, qx, qy = tasks.sample(8)
    logits = adapter.predict(sx, sy, qx, 5)
    assert logits.shape == (8, 25, 5)
    assert (logits.argmax(-1) == qy).float().mean() > 0.6  # chance is 0.2


def test_unknown_names_and_options_are_one_line_errors():
    with pytest.raises(MetalearnError, match="unknown algorithm 'mamll'"):
        build_adapter("mamll", 16, 5)
    with pytest.raises(MetalearnError, match=r"finetune: unknown option\(s\) \['step'\]; valid: .*steps"):
        build_adapter("finetune", 16, 5, {"step": 3})
    assert build_adapter("finetune", 16, 5, {"steps": 7}).cfg.steps == 7
