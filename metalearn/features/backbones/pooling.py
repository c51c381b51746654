"""From frame-level hidden states to utterance embeddings: the masked mean over valid frames.

Mean pooling is linear, so mixing layers before or after pooling gives the same embedding: the cache
stores every layer's mean-pooled embedding [N, L + 1, D] and the layer choice is made later on cached
features (:mod:`metalearn.features.featurize`).
"""

from __future__ import annotations

from torch import Tensor

from metalearn.features.backbones.base import length_mask


def masked_mean(hidden: Tensor, lengths: Tensor) -> Tensor:
    """Mean over valid frames: ``hidden`` [..., B, F, D], ``lengths`` [B] -> [..., B, D]."""
    mask = length_mask(lengths, hidden.shape[-2]).to(hidden.dtype)  # [B, F]
    total = (hidden * mask[..., None]).sum(dim=-2)
    return total / lengths.clamp(min=1).to(hidden.dtype)[:, None]
