"""Reptile (Nichol, Achiam & Schulman, 2018) on a functional MLP head over frozen embeddings.

Meta-training: for each task, ``inner_steps`` full-batch steps of SGD or Adam on the task's support and query
items together, from the current initialisation; then ``init += meta_lr * mean over tasks(adapted - init)``.
The tasks' inner loops run at once on episode-stacked heads (:func:`metalearn.fewshot.algorithms.stacked.finetune`:
hand-written gradients, the in-place :func:`functional.batched_adam_step`); the per-task loop with ``torch.optim``
that the tests compare against lives in ``tests/reference_impls.py``. Test time: fine-tune the head from the
meta-learned initialisation on the support set with the same inner optimizer (``test_steps`` steps, or the
best of 0..test_steps by validation macro-F1).

Defaults (tried on the synthetic speakers described in ``maml.py``, D = 768, 200 meta-steps): hidden 256,
inner Adam (beta1 = 0, as in the paper) lr 3e-3, 5 inner steps, 10 test steps, meta_lr 0.5, 16 tasks per
meta-step: 0.84 (1-shot) and 0.96 (5-shot) 5-way accuracy on unseen speakers; inner SGD (best lr 0.1) reached
only 0.55 / 0.92, and Adam at lr 1e-2 0.46 / 0.84.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from metalearn.fewshot.algorithms.base import AdapterBase, AdapterSpec, TaskSampler
from metalearn.fewshot.algorithms.heads import Params, check_episodes, init_head, predict_stacked
from metalearn.fewshot.algorithms.stacked import Adam, finetune, forward
from metalearn.util.devices import resolve_device
from metalearn.util.errors import MetalearnError
from metalearn.util.ranges import Rule, check_fields

ADAM_BETAS = (0.0, 0.999)
ADAM_EPS = 1e-8
OPTIMIZERS = ("sgd", "adam")


@dataclasses.dataclass(frozen=True)
class ReptileConfig:
    """Hyperparameters of Reptile.

    Attributes:
        hidden: hidden sizes of the MLP head (() = a linear head).
        inner_optimizer: "sgd" or "adam" (betas (0, 0.999)), for meta-training and test-time fine-tuning.
        inner_lr: the inner optimizer's step size.
        inner_steps: full-batch inner steps per training task (on support + query).
        test_steps: fine-tuning steps at test time (with validation data: the most steps considered).
        meta_lr: the outer step size epsilon in ``init += epsilon * mean(adapted - init)``.
        meta_batch: tasks per meta-step.
        predict_chunk: episodes fine-tuned at once in ``predict`` (bounds memory; results do not depend on it).
    """

    hidden: tuple[int, ...] = (256,)
    inner_optimizer: str = "adam"
    inner_lr: float = 3e-3
    inner_steps: int = 5
    test_steps: int = 10
    meta_lr: float = 0.5
    meta_batch: int = 16
    predict_chunk: int = 256

    RANGES: ClassVar[dict[str, Rule]] = {
        "hidden": ">= 1", "inner_optimizer": OPTIMIZERS, "inner_lr": "> 0", "inner_steps": ">= 1",
        "test_steps": ">= 0", "meta_lr": "> 0", "meta_batch": ">= 1", "predict_chunk": ">= 1"}

    def __post_init__(self) -> None:
        check_fields(self)


def search_space(trial: Any) -> dict:
    """Reptile's tuning space (an Optuna trial, duck-typed -> ReptileConfig fields); the head stays as configured."""
    return {"inner_lr": trial.suggest_float("inner_lr", 3e-4, 3e-2, log=True),
            "inner_steps": trial.suggest_categorical("inner_steps", [3, 5, 10]),
            "test_steps": trial.suggest_categorical("test_steps", [5, 10, 20]),
            "meta_lr": trial.suggest_float("meta_lr", 0.1, 1.0, log=True),
            "meta_batch": trial.suggest_categorical("meta_batch", [4, 8, 16])}


def inner_train(params: Params, x: Tensor, y: Tensor, steps: int, lr: float, optimizer: str,
                rows: Tensor | None = None) -> tuple[Params, Tensor | None]:
    """Each episode's head after ``steps`` full-batch steps from ``params`` on x [E, N, D], y [E, N] (< 0 =
    padding): stacked parameters [E, ...], and the logits [E, T + 1, M, W] of ``rows`` [E, M, D] after each step."""
    adam: Adam | None = (ADAM_BETAS, ADAM_EPS) if optimizer == "adam" else None
    return finetune(params, x, y, steps, lr, adam, rows)


class Reptile(AdapterBase):
    """Reptile: meta-learns the head's initialisation by moving it toward each task's fine-tuned weights."""

    name = "reptile"
    meta_learns = True
    config_cls = ReptileConfig

    @classmethod
    def from_spec(cls, spec: AdapterSpec, cfg: object) -> AdapterBase:
        return cls(spec.dim, spec.ways, cfg, spec.seed, spec.device)

    def __init__(self, dim: int, ways: int, cfg: ReptileConfig | None = None, seed: int = 0,
                 device: str | torch.device = "cpu") -> None:
        self.cfg = cfg if cfg is not None else self.config_cls()
        if self.cfg.inner_optimizer not in OPTIMIZERS:
            raise MetalearnError(f"reptile: inner_optimizer {self.cfg.inner_optimizer!r}: expected sgd or adam")
        self.dim, self.ways, self.seed = dim, ways, seed
        self.device = resolve_device(device) if isinstance(device, str) else device
        head = init_head([dim, *self.cfg.hidden], ways, seed, device=self.device)
        self.dtype = head["w0"].dtype
        self.meta: dict[str, Params] = {"head": head}

    def meta_delta(self, batch: Sequence[Tensor]) -> Params:
        """mean over tasks of (adapted - init), each task adapted on its support and query items together.

        batch: support_x [E, S, D], support_y [E, S], query_x [E, Q, D], query_y [E, Q] (< 0 = padding).
        """
        x = torch.cat([batch[0], batch[2]], dim=1).to(self.device, self.dtype)
        y = torch.cat([batch[1], batch[3]], dim=1).to(self.device)
        head, steps = self.meta["head"], self.cfg.inner_steps
        adapted, _ = inner_train(head, x, y, steps, self.cfg.inner_lr, self.cfg.inner_optimizer)
        return {k: adapted[k].mean(0) - head[k] for k in head}

    def meta_train(self, sampler: TaskSampler, steps: int) -> None:
        """``steps`` Reptile updates, each on ``meta_batch`` tasks from ``sampler``."""
        for _ in range(steps):
            delta = self.meta_delta(sampler.sample(self.cfg.meta_batch))
            self.meta["head"] = {k: v + self.cfg.meta_lr * delta[k] for k, v in self.meta["head"].items()}

    def trajectory(self, sx: Tensor, sy: Tensor, x: Tensor, every: bool) -> Tensor:
        """Logits of x [E, N, D] after 0..test_steps fine-tuning steps on sx [E, S, D], sy [E, S]:
        [E, T + 1, N, W] (``every``), else after the last [E, N, W]."""
        if not every:
            adapted, _ = inner_train(self.meta["head"], sx, sy, self.cfg.test_steps, self.cfg.inner_lr,
                                     self.cfg.inner_optimizer)
            return forward(adapted, x)
        _, logits = inner_train(self.meta["head"], sx, sy, self.cfg.test_steps, self.cfg.inner_lr,
                                self.cfg.inner_optimizer, rows=x)
        return logits

    def predict(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int,
                val_x: Tensor | None = None, val_y: Tensor | None = None) -> Tensor:
        """Fine-tune from the meta-learned init on each support set -> query logits [E, Q, W]."""
        check_episodes(self.name, self.ways, self.dim, ways, support_x)
        cast = lambda t: t.to(self.device, self.dtype)  # noqa: E731
        with torch.no_grad():
            logits = predict_stacked(self.trajectory, cast(support_x), support_y.to(self.device), cast(query_x),
                                      None if val_x is None else cast(val_x), val_y, self.cfg.predict_chunk)
        return logits.to(query_x.device)
