"""SimpleShot (Wang et al. 2019): nearest class centroid on CL2N features (centre, then L2-normalise).

The centring mean, chosen by ``SimpleShotConfig.center``:
- ``support``: each episode's own support mean (makes the method invariant to a global shift of the features);
- ``base``: the mean embedding of the meta-training speakers, learned by ``meta_train`` from ``steps`` batches of
  ``sampler.sample(meta_batch)`` (the real support and query rows of every sampled episode are averaged; an
  utterance drawn twice counts twice);
- ``none``: L2-normalisation only (the paper's L2N).
Centroids are the means of the transformed support features; logits are negative squared Euclidean distances,
so the arg-max is the nearest centroid by Euclidean distance. Query items are scored independently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from metalearn.fewshot.algorithms.base import AdapterBase, TaskSampler
from metalearn.fewshot.algorithms.functional import prototypes, squared_euclidean_logits
from metalearn.util.devices import resolve_device
from metalearn.util.errors import MetalearnError
from metalearn.util.ranges import Rule, check_fields

CENTERS = ("support", "base", "none")


@dataclass(frozen=True)
class SimpleShotConfig:
    center: str = "support"  # support | base | none
    meta_batch: int = 64  # episodes per sampled batch when estimating the base mean

    RANGES: ClassVar[dict[str, Rule]] = {"center": CENTERS, "meta_batch": ">= 1"}

    def __post_init__(self) -> None:
        check_fields(self)


def search_space(trial: Any) -> dict:
    """SimpleShot's tuning space (an Optuna trial, duck-typed -> SimpleShotConfig fields): the centring."""
    return {"center": trial.suggest_categorical("center", list(CENTERS))}


def cl2n(x: Tensor, mean: Tensor | None, eps: float = 1e-8) -> Tensor:
    """Centre on ``mean`` (broadcastable to x, or None for no centring) and L2-normalise: [..., D] -> [..., D]."""
    if mean is not None:
        x = x - mean
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)


def support_mean(support_x: Tensor, support_y: Tensor) -> Tensor:
    """Mean of the real support rows: support_x [E, S, D], support_y [E, S] -> [E, 1, D]."""
    real = (support_y >= 0).to(support_x.dtype).unsqueeze(-1)
    return (support_x * real).sum(1, keepdim=True) / real.sum(1, keepdim=True).clamp_min(1)


class SimpleShot(AdapterBase):
    """Nearest centroid with CL2N features; ``meta_train`` only estimates the base mean when configured."""

    name = "simpleshot"

    def __init__(self, dim: int, cfg: SimpleShotConfig | None = None, seed: int = 0,
                 device: str | torch.device = "cpu") -> None:
        self.dim, self.cfg, self.seed = dim, cfg or SimpleShotConfig(), seed
        if self.cfg.center not in CENTERS:
            raise MetalearnError(f"center {self.cfg.center!r}: expected one of {', '.join(CENTERS)}")
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.meta_learns = self.cfg.center == "base"
        self.base_mean: Tensor | None = None  # [D], set by meta_train

    def meta_train(self, sampler: TaskSampler, steps: int) -> None:
        """Average the meta-training speakers' embeddings over ``steps`` sampled batches (only for ``center=base``)."""
        if self.cfg.center != "base" or steps <= 0:
            return
        total = torch.zeros(self.dim, dtype=torch.float64, device=self.device)
        count = torch.zeros((), dtype=torch.float64, device=self.device)
        for _ in range(steps):
            sx, sy, qx, qy = (t.to(self.device) for t in sampler.sample(self.cfg.meta_batch))
            for x, y in ((sx, sy), (qx, qy)):
                real = (y >= 0).to(torch.float64).unsqueeze(-1)  # [E, N, 1]
                total += (x.to(torch.float64) * real).sum((0, 1))
                count += real.sum()
        self.base_mean = total / count.clamp_min(1)

    def _mean(self, support_x: Tensor, support_y: Tensor) -> Tensor | None:
        if self.cfg.center == "support":
            return support_mean(support_x, support_y)
        if self.cfg.center == "none":
            return None
        if self.base_mean is None:
            raise MetalearnError("simpleshot with center=base needs meta_train before predict")
        return self.base_mean.to(support_x.dtype)

    @torch.no_grad()
    def predict(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int,
                val_x: Tensor | None = None, val_y: Tensor | None = None) -> Tensor:
        """support_x [E, S, D], support_y [E, S], query_x [E, Q, D] -> logits [E, Q, W] (validation unused)."""
        sx, sy, qx = support_x.to(self.device), support_y.to(self.device), query_x.to(self.device)
        mean = self._mean(sx, sy)
        centroids = prototypes(cl2n(sx, mean), sy, ways)  # [E, W, D]
        return squared_euclidean_logits(cl2n(qx, mean), centroids)
