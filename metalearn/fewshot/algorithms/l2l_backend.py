"""learn2learn's MAML and Meta-SGD behind the same interface (optional: ``make setup-l2l``).

The core never imports this module's dependency: learn2learn is imported only when one of these
classes is built. Its package ``__init__`` imports gym and torchvision (a CUDA build that breaks
transformers here), so :func:`import_l2l` loads just ``learn2learn.algorithms.maml`` and
``learn2learn.algorithms.meta_sgd`` through placeholder parent packages.

The head is the same MLP as :mod:`metalearn.fewshot.algorithms.maml`, initialised from the same seed, so the
two backends start from identical weights and can be compared step for step. learn2learn adapts one
task at a time (clone, adapt, loss), which is the loop the vectorised path replaces.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalearn.fewshot.algorithms.base import TaskSampler
from metalearn.fewshot.algorithms.heads import init_head
from metalearn.fewshot.algorithms.maml import MAMLConfig
from metalearn.util.errors import MetalearnError


def import_l2l() -> tuple[types.ModuleType, types.ModuleType]:
    """(learn2learn.algorithms.maml, learn2learn.algorithms.meta_sgd) without learn2learn's package __init__."""
    loaded = sys.modules.get("learn2learn")
    if loaded is not None and getattr(loaded, "__path__", None):
        root = list(loaded.__path__)[0]
    else:
        spec = importlib.util.find_spec("learn2learn")
        if spec is None or not spec.submodule_search_locations:
            raise MetalearnError("learn2learn is not installed: run `make setup-l2l` (see requirements-l2l.txt)")
        root = list(spec.submodule_search_locations)[0]
    for name, path in (("learn2learn", root), ("learn2learn.algorithms", f"{root}/algorithms")):
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [path]
            sys.modules[name] = package
    return (importlib.import_module("learn2learn.algorithms.maml"),
            importlib.import_module("learn2learn.algorithms.meta_sgd"))


def head_module(dim: int, ways: int, hidden: tuple[int, ...], seed: int) -> nn.Sequential:
    """``nn.Sequential`` MLP holding exactly :func:`init_head`'s weights for this seed."""
    params = init_head([dim, *hidden], ways, seed)
    layers: list[nn.Module] = []
    for i in range(len(hidden) + 1):
        linear = nn.Linear(params[f"w{i}"].shape[1], params[f"w{i}"].shape[0])
        with torch.no_grad():
            linear.weight.copy_(params[f"w{i}"])
            linear.bias.copy_(params[f"b{i}"])
        layers += [linear, nn.ReLU()] if i < len(hidden) else [linear]
    return nn.Sequential(*layers)


class L2LMAML:
    """learn2learn's ``MAML`` (second order unless ``first_order``) or ``MetaSGD`` over the MLP head."""

    def __init__(self, dim: int, ways: int, cfg: MAMLConfig | None = None, seed: int = 0,
                 device: str | torch.device = "cpu", algorithm: str = "maml", first_order: bool = False) -> None:
        maml_mod, msgd_mod = import_l2l()
        self.cfg = cfg or MAMLConfig()
        self.dim, self.ways, self.device = dim, ways, torch.device(device)
        self.name = f"l2l_{algorithm}"
        self.meta_learns = True
        head = head_module(dim, ways, self.cfg.hidden, seed).to(self.device)
        if algorithm == "maml":
            self.learner = maml_mod.MAML(head, lr=self.cfg.inner_lr, first_order=first_order)
        elif algorithm == "metasgd":
            self.learner = msgd_mod.MetaSGD(head, lr=self.cfg.inner_lr, first_order=first_order)
        else:
            raise MetalearnError(f"learn2learn backend: algorithm {algorithm!r}; expected maml or metasgd")
        self.optimizer = torch.optim.Adam(self.learner.parameters(), lr=self.cfg.meta_lr)
        self.losses: list[float] = []

    def _adapted(self, sx: Tensor, sy: Tensor, steps: int) -> nn.Module:
        clone = self.learner.clone()
        for _ in range(steps):
            clone.adapt(F.cross_entropy(clone(sx), sy))
        return clone

    def meta_train(self, sampler: TaskSampler, steps: int) -> None:
        """``steps`` meta-steps of ``meta_batch`` tasks, one task at a time (learn2learn's loop)."""
        for _ in range(steps):
            sx, sy, qx, qy = (t.to(self.device) for t in sampler.sample(self.cfg.meta_batch))
            self.optimizer.zero_grad()
            total = torch.zeros((), device=self.device)
            for e in range(sx.shape[0]):
                clone = self._adapted(sx[e], sy[e], self.cfg.inner_steps)
                total = total + F.cross_entropy(clone(qx[e]), qy[e], ignore_index=-1)
            loss = total / sx.shape[0]
            loss.backward()
            self.optimizer.step()
            self.losses.append(float(loss.detach()))

    def predict(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int,
                val_x: Tensor | None = None, val_y: Tensor | None = None) -> Tensor:
        """Adapt ``test_steps`` on each support set -> logits [E, Q, W] (no model selection on this backend)."""
        if ways != self.ways:
            raise MetalearnError(f"{self.name}: built for {self.ways}-way episodes, got ways={ways}")
        out = []
        for sx, sy, qx in zip(support_x.to(self.device), support_y.to(self.device), query_x.to(self.device),
                              strict=True):
            out.append(self._adapted(sx, sy, self.cfg.test_steps)(qx).detach())
        return torch.stack(out).to(query_x.device)
