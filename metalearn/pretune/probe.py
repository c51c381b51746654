"""The frozen linear probe: the ceiling a pre-finetuned head must clear on the same splits of the same feature.

Multinomial logistic regression with an L2 penalty on the weights, fitted full-batch by L-BFGS in float64 on
features standardized with the train split's mean and std: deterministic (no sampling, no dropout). Pure
functions over tensors; :mod:`metalearn.pretune.subsets` feeds them the untouched backbone's pooled states.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch
from torch import Tensor


@dataclasses.dataclass(frozen=True)
class Probe:
    """A fitted probe: logits = ((x - shift) / scale) @ weight + bias; weight [D, C], bias [C], shift/scale [D]."""

    weight: Tensor
    bias: Tensor
    shift: Tensor
    scale: Tensor

    def logits(self, x: Tensor) -> Tensor:
        """``x`` [N, D] -> logits [N, C] (float64)."""
        return ((x.double() - self.shift) / self.scale) @ self.weight + self.bias

    def accuracy(self, x: Tensor, y: Tensor) -> float:
        """Share of rows of ``x`` [N, D] whose argmax is ``y`` [N]; NaN for no rows."""
        if len(y) == 0:
            return math.nan
        return float((self.logits(x).argmax(-1) == y).double().mean())


def probe_loss(weight: Tensor, bias: Tensor, z: Tensor, y: Tensor, l2: float) -> Tensor:
    """Mean cross-entropy of logits ``z @ weight + bias`` (z [N, D], y [N]) + ``l2 / 2 * ||weight||^2``."""
    ce = torch.nn.functional.cross_entropy(z @ weight + bias, y)
    return ce + 0.5 * l2 * (weight * weight).sum()


def fit_probe(x: Tensor, y: Tensor, n_classes: int, l2: float, max_iter: int = 500, tol: float = 1e-9) -> Probe:
    """The probe minimising :func:`probe_loss` on ``x`` [N, D] standardized by its own mean and std (floored
    at 1e-8), labels ``y`` [N] in 0..n_classes-1; weights start at zero (a unique optimum for l2 > 0)."""
    x = x.double()
    shift, scale = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-8)
    z = (x - shift) / scale
    weight = torch.zeros(x.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, tolerance_grad=tol, tolerance_change=tol,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = probe_loss(weight, bias, z, y, l2)
        loss.backward()
        return loss

    opt.step(closure)
    return Probe(weight.detach(), bias.detach(), shift, scale)


@dataclasses.dataclass(frozen=True)
class ProbeScore:
    """The probe chosen on dev: its L2 strength and its dev and test accuracy."""

    l2: float
    dev: float
    test: float


def probe_scores(train: tuple[Tensor, Tensor], dev: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor],
                 n_classes: int, l2s: Sequence[float]) -> ProbeScore:
    """Fit one probe per L2 strength on ``train`` (features [N, D], labels [N]), keep the best on ``dev`` (the
    first in ``l2s`` on ties; the first when dev is empty), score it on dev and test."""
    best: ProbeScore | None = None
    for l2 in l2s:
        probe = fit_probe(*train, n_classes, float(l2))
        score = ProbeScore(float(l2), probe.accuracy(*dev), probe.accuracy(*test))
        if best is None or (not math.isnan(score.dev) and (math.isnan(best.dev) or score.dev > best.dev)):
            best = score
    assert best is not None, "probe_scores needs at least one L2 strength"
    return best


def mix_states(states: Tensor, weights: Tensor | None) -> Tensor:
    """Features [N, D] of pooled states [N, S, D]: the one state (S = 1), or the states under mix ``weights`` [S]."""
    if weights is None:
        if states.shape[1] != 1:
            raise ValueError(f"{states.shape[1]} states but no mix weights")
        return states[:, 0]
    return torch.einsum("s,nsd->nd", weights.to(states.dtype), states)
