"""Prototypical networks (Snell et al. 2017) on precomputed embeddings.

One class, two methods, chosen by ``ProtoNetConfig.projection``:
- ``projection=False`` (name ``protonet``): the identity embedding, nothing to meta-train; each query goes to
  the nearest class mean of the raw support embeddings (squared Euclidean distance);
- ``projection=True`` (name ``protonet_proj``): the embeddings first pass through a projection D -> proj_dim
  (linear when ``hidden == 0``, else Linear-ReLU-Linear), meta-trained with the prototypical loss on episodes
  of the meta-training speakers drawn from ``sampler.sample(meta_batch)``, with Adam.
Query items are scored independently, so padded query rows never change the real rows' logits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from metalearn.fewshot.algorithms.base import AdapterBase, TaskSampler
from metalearn.fewshot.algorithms.functional import (
    cosine_logits,
    prototypes,
    prototypical_loss,
    squared_euclidean_logits,
)
from metalearn.util.devices import resolve_device
from metalearn.util.errors import MetalearnError
from metalearn.util.ranges import Rule, check_fields

DISTANCES = ("sqeuclidean", "cosine")


@dataclass(frozen=True)
class ProtoNetConfig:
    projection: bool = False  # False: identity embedding (no meta-training)
    proj_dim: int = 256
    hidden: int = 0  # 0: one linear map D -> proj_dim; > 0: Linear(D, hidden) - ReLU - Linear(hidden, proj_dim)
    distance: str = "sqeuclidean"  # sqeuclidean | cosine (scaled by cosine_scale) at prediction time
    cosine_scale: float = 10.0
    lr: float = 1e-3
    weight_decay: float = 0.0
    meta_batch: int = 16  # episodes per meta-training step

    RANGES: ClassVar[dict[str, Rule]] = {
        "proj_dim": ">= 1", "hidden": ">= 0", "distance": DISTANCES, "cosine_scale": "> 0", "lr": "> 0",
        "weight_decay": ">= 0", "meta_batch": ">= 1"}

    def __post_init__(self) -> None:
        check_fields(self)


def search_space(trial: Any) -> dict:
    """``protonet``'s tuning space (an Optuna trial, duck-typed -> ProtoNetConfig fields): the distance."""
    distance = trial.suggest_categorical("distance", list(DISTANCES))
    scale = trial.suggest_categorical("cosine_scale", [5.0, 10.0, 20.0]) if distance == "cosine" else 10.0
    return {"distance": distance, "cosine_scale": scale}


def projection_search_space(trial: Any) -> dict:
    """``protonet_proj``'s tuning space: the projection's training and shape (the distance stays)."""
    return {"lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
            "proj_dim": trial.suggest_categorical("proj_dim", [64, 128, 256]),
            "hidden": trial.suggest_categorical("hidden", [0, 256]),
            "meta_batch": trial.suggest_categorical("meta_batch", [8, 16, 32])}


# One module, two registrations: each registered name's space (see metalearn.tune.spaces).
SEARCH_SPACES: dict[str, Callable[[Any], dict]] = {"protonet": search_space, "protonet_proj": projection_search_space}


def build_projection(dim: int, cfg: ProtoNetConfig) -> nn.Module:
    """The embedding [..., D] -> [..., proj_dim] (``nn.Identity`` without projection)."""
    if not cfg.projection:
        return nn.Identity()
    if cfg.hidden <= 0:
        return nn.Linear(dim, cfg.proj_dim)
    return nn.Sequential(nn.Linear(dim, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, cfg.proj_dim))


class ProtoNet(AdapterBase):
    """Nearest class mean in an embedding space that is either the identity or a meta-trained projection."""

    def __init__(self, dim: int, cfg: ProtoNetConfig | None = None, seed: int = 0,
                 device: str | torch.device = "cpu") -> None:
        self.dim, self.cfg, self.seed = dim, cfg or ProtoNetConfig(), seed
        if self.cfg.distance not in DISTANCES:
            raise MetalearnError(f"distance {self.cfg.distance!r}: expected one of {', '.join(DISTANCES)}")
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.name = "protonet_proj" if self.cfg.projection else "protonet"
        self.meta_learns = self.cfg.projection
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.embed = build_projection(dim, self.cfg).to(self.device)
        self.history: list[float] = []  # meta-training loss per step

    def loss(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor, ways: int) -> Tensor:
        """Prototypical loss (scalar) of a batch: support [E, S, D]/[E, S], query [E, Q, D]/[E, Q]."""
        return prototypical_loss(self.embed(support_x), support_y, self.embed(query_x), query_y, ways)

    def meta_train(self, sampler: TaskSampler, steps: int) -> None:
        """``steps`` Adam steps on the prototypical loss; a no-op without projection."""
        if not self.cfg.projection or steps <= 0:
            return
        opt = torch.optim.Adam(self.embed.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        self.embed.train()
        for _ in range(steps):  # the loss and Adam are deterministic; the sampler carries its own seed
            sx, sy, qx, qy = (t.to(self.device) for t in sampler.sample(self.cfg.meta_batch))
            loss = self.loss(sx, sy, qx, qy, sampler.ways)
            opt.zero_grad()
            loss.backward()
            opt.step()
            self.history.append(loss.item())
        self.embed.eval()

    @torch.no_grad()
    def predict(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int,
                val_x: Tensor | None = None, val_y: Tensor | None = None) -> Tensor:
        """support_x [E, S, D], support_y [E, S], query_x [E, Q, D] -> logits [E, Q, W] (validation unused)."""
        protos = prototypes(self.embed(support_x.to(self.device)), support_y.to(self.device), ways)
        query = self.embed(query_x.to(self.device))
        if self.cfg.distance == "cosine":
            return cosine_logits(query, protos, self.cfg.cosine_scale)
        return squared_euclidean_logits(query, protos)
