"""The backbone contract: padded waveforms in, every layer's hidden states and valid lengths out."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from metalearn.util.errors import MetalearnError


@dataclasses.dataclass
class BackboneOutput:
    """Hidden states of a padded batch.

    Attributes:
        hidden_states: [L + 1, B, F, D] the input embedding (index 0) and each layer's output.
        lengths: [B] valid frames per utterance (frames past it are padding).
    """

    hidden_states: Tensor
    lengths: Tensor


@dataclasses.dataclass
class Trunk:
    """The shared lower part of a forward (``WhisperBackbone.trunk``, continued by ``forward_from``):
    states [layers + 1] of [B, F, D], the attention mask, frames [B]."""

    states: list[Tensor]
    mask: Tensor | None
    frames: Tensor


class SpeechBackbone(nn.Module):
    """A speech encoder. Subclasses set the attributes below and implement :meth:`forward`.

    Attributes:
        sample_rate: expected input rate (16 kHz for every supported family).
        num_states: L + 1, the number of hidden states returned (embedding plus L layers).
        hidden_size: D.
        name: a short description (family and source) for logs and cache keys.
    """

    sample_rate: int = 16_000
    num_states: int
    hidden_size: int
    name: str

    def forward(self, waves: Tensor, lengths: Tensor) -> BackboneOutput:  # pragma: no cover - abstract
        """``waves`` [B, T] float32 at 16 kHz, zero-padded; ``lengths`` [B] valid samples."""
        raise NotImplementedError

    def keep_layers(self, layers: int) -> None:
        """Keep only the first ``layers`` transformer layers (states 0..layers, each equal to the full model's
        state of that index: no final norm is applied to the new last state); the layers above are dropped, so
        they are never computed. Families that cannot do this raise MetalearnError."""
        raise MetalearnError(f"backbone {self.name}: keeping only the first {layers} layers (backbone.layers) is "
                             f"not supported for {type(self).__name__}")

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


def pad_batch(waves: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Zero-pad 1-D waveforms into [B, T_max]; returns (batch, lengths [B])."""
    lengths = torch.tensor([w.shape[0] for w in waves], dtype=torch.long)
    batch = torch.zeros(len(waves), int(lengths.max()), dtype=torch.float32)
    for i, w in enumerate(waves):
        batch[i, : w.shape[0]] = w
    return batch, lengths


def checked_depth(layers: int, available: int, name: str) -> int:
    """``layers`` when it is a valid number of layers to keep out of ``available``; else one line naming it."""
    if isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers <= available:
        raise MetalearnError(f"backbone.layers {layers!r}: expected an integer in 1..{available} (the layers of "
                             f"{name} to keep)")
    return layers


def length_mask(lengths: Tensor, size: int) -> Tensor:
    """[B, size] bool, True on valid positions."""
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]
