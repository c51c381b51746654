"""From frame-level hidden states to utterance embeddings: masked mean, layer choice, layer mixing.

Mean pooling is linear, so mixing layers before or after pooling gives the same embedding: the
cache stores every layer's mean-pooled embedding [N, L + 1, D] and a learned mix (SUPERB-style
softmax-weighted sum) can be trained later on cached features.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from metalearn.features.backbones.base import length_mask


def masked_mean(hidden: Tensor, lengths: Tensor) -> Tensor:
    """Mean over valid frames: ``hidden`` [..., B, F, D], ``lengths`` [B] -> [..., B, D]."""
    mask = length_mask(lengths, hidden.shape[-2]).to(hidden.dtype)  # [B, F]
    total = (hidden * mask[..., None]).sum(dim=-2)
    return total / lengths.clamp(min=1).to(hidden.dtype)[:, None]


def select_layers(pooled: Tensor, layers: str | int | list[int]) -> Tensor:
    """Pick states from ``pooled`` [..., L + 1, D] (layer axis second to last).

    ``layers``: an index (negative counts from the top), a list of indices, or "all".
    Returns [..., D] for an index, else [..., len, D].
    """
    if layers == "all":
        return pooled
    if isinstance(layers, int):
        return pooled[..., layers, :]
    return pooled[..., list(layers), :]


class WeightedLayerSum(nn.Module):
    """Softmax-weighted sum of layers: [..., L + 1, D] -> [..., D] (weights start uniform)."""

    def __init__(self, num_states: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(num_states))

    def forward(self, states: Tensor) -> Tensor:
        weights = torch.softmax(self.logits, dim=0)
        return torch.einsum("...ld,l->...d", states, weights)
