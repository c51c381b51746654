"""From cached embeddings to the features every few-shot method sees: the layer choice and standardisation.

The embedding cache holds every hidden state's mean-pooled embedding, [N, L + 1, D]. A run picks one
state (or the mean of all), then z-scores each dimension with statistics fitted on the meta-training
speakers only (:class:`Standardizer`): test speakers never shape the features they are scored on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


def select_features(values: np.ndarray, layer: int | str) -> Tensor:
    """Utterance features [N, D] from cached embeddings [N, L + 1, D]: one layer, or "mean" of all states."""
    chosen = values.mean(axis=1) if layer == "mean" else values[:, int(layer)]
    return torch.from_numpy(np.ascontiguousarray(chosen, dtype=np.float32))


@dataclass(frozen=True)
class Standardizer:
    """``z = (x - shift) / scale`` per dimension, in float64; ``x = z * scale + shift``. shift, scale: [D]."""

    shift: Tensor
    scale: Tensor

    @classmethod
    def fit(cls, x: Tensor, rows: Sequence[int] | np.ndarray) -> Standardizer:
        """Mean and std (floored at 1e-8) of ``x[rows]`` (``x`` [N, D]), in float64."""
        ref = x[torch.as_tensor(np.asarray(rows), dtype=torch.long)].double()
        return cls(ref.mean(0), ref.std(0).clamp_min(1e-8))

    @classmethod
    def identity(cls, dim: int) -> Standardizer:
        return cls(torch.zeros(dim, dtype=torch.float64), torch.ones(dim, dtype=torch.float64))

    def apply(self, x: Tensor) -> Tensor:
        """``x`` [N, D] -> standardized float32 [N, D]."""
        return ((x.double() - self.shift) / self.scale).float()

    def carry_head(self, weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
        """A linear head over raw features (weight [D, W], bias [W]) as the same function of standardized
        ones: float32 (weight [D, W], bias [W])."""
        w, b = reparametrize(weight.double(), bias.double(), self.shift.double(), self.scale.double())
        return w.float(), b.float()


def standardize(x: Tensor, fit_rows: Sequence[int] | np.ndarray) -> Tensor:
    """``x`` [N, D] z-scored per dimension with the mean and std of ``x[fit_rows]`` (never the test speakers)."""
    return Standardizer.fit(x, fit_rows).apply(x)


def reparametrize(weight: Tensor, bias: Tensor, shift: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
    """The head over ``z`` that equals the head (``weight``, ``bias``) over ``x = z * scale + shift``.

    ``x @ W + b = z @ (scale[:, None] * W) + (shift @ W + b)``.
    Shapes: weight [..., D, W], bias [..., W], shift and scale [..., D] (leading dims broadcast).
    Returns (weight [..., D, W], bias [..., W]).
    """
    new_weight = scale.unsqueeze(-1) * weight
    new_bias = (shift.unsqueeze(-2) @ weight).squeeze(-2) + bias
    return new_weight, new_bias
