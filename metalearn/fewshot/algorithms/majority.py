"""The reference row of every table: the support set's majority class, predicted for every query.

Not an adaptation method but the floor any method must clear. With a balanced N-way support set it
predicts the lowest class index; on Paper A's binary protocol (support balanced, queries 1 target : 4
others) it answers "other" and scores 80% accuracy and about 0.44 macro-F1, not the 50% of 1/ways.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from metalearn.fewshot.algorithms.base import AdapterBase
from metalearn.util.devices import resolve_device


@dataclass(frozen=True)
class MajorityConfig:
    """Nothing to set: ties go to the lowest class index."""


class Majority(AdapterBase):
    """Predicts the most frequent support label (ties: the lowest index) for every query."""

    name = "majority"

    def __init__(self, dim: int, cfg: MajorityConfig | None = None, seed: int = 0,
                 device: str | torch.device = "cpu") -> None:
        self.dim, self.cfg = dim, cfg or MajorityConfig()
        self.device = resolve_device(device) if isinstance(device, str) else device

    @torch.no_grad()
    def predict(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int,
                val_x: Tensor | None = None, val_y: Tensor | None = None) -> Tensor:
        """support_y [E, S] (-1 = padding), query_x [E, Q, D] -> one-hot logits [E, Q, W] of the majority class."""
        y = support_y.to(self.device)
        counts = torch.nn.functional.one_hot(y.clamp_min(0), ways).mul((y >= 0)[..., None]).sum(1)  # [E, W]
        winner = counts.argmax(-1)  # ties: the first maximum, i.e. the lowest class index
        logits = torch.nn.functional.one_hot(winner, ways).to(torch.float32)  # [E, W]
        return logits[:, None, :].expand(-1, query_x.shape[1], -1)
