"""The backbone with one linear head per corpus, Paper A's class-count-scaled loss, and layer freezing."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from metalearn.features.backbones.base import SpeechBackbone
from metalearn.features.backbones.pooling import masked_mean
from metalearn.util.errors import MetalearnError


class MultiHeadClassifier(nn.Module):
    """Backbone -> masked mean of hidden state ``layer`` -> the corpus's own linear head.

    Args:
        backbone: any :class:`SpeechBackbone`.
        label_sets: corpus -> its class names (head ``corpus`` has ``len(labels)`` outputs).
        layer: index into the backbone's L + 1 hidden states (negative counts from the top).
    """

    def __init__(self, backbone: SpeechBackbone, label_sets: Mapping[str, Sequence[str]],
                 layer: int = -1) -> None:
        super().__init__()
        if not -backbone.num_states <= layer < backbone.num_states:
            raise MetalearnError(f"layer {layer} outside the backbone's {backbone.num_states} hidden states")
        self.backbone = backbone
        self.layer = layer
        self.label_sets = {c: tuple(labels) for c, labels in label_sets.items()}
        self.heads = nn.ModuleDict({c: nn.Linear(backbone.hidden_size, len(labels))
                                    for c, labels in sorted(self.label_sets.items())})

    def embed(self, waves: Tensor, lengths: Tensor) -> Tensor:
        """``waves`` [B, T], ``lengths`` [B] -> pooled features [B, D]."""
        out = self.backbone(waves, lengths)
        return masked_mean(out.hidden_states[self.layer], out.lengths)

    def forward(self, waves: Tensor, lengths: Tensor, corpus: str) -> Tensor:
        """``waves`` [B, T] at 16 kHz, ``lengths`` [B] -> logits [B, C_corpus]."""
        pooled = self.embed(waves, lengths)
        head = self.heads[corpus]
        return head(pooled.to(head.weight.dtype))


def scaled_loss(logits: Tensor, y: Tensor, n_classes: int, reduction: str = "mean") -> Tensor:
    """Paper A's per-corpus loss: cross-entropy / log(n_classes); chance level costs 1 for every corpus.

    ``logits`` [B, C], ``y`` [B] -> scalar (``reduction="mean"`` or ``"sum"``).
    """
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}")
    ce = nn.functional.cross_entropy(logits.float(), y, reduction=reduction)
    return ce / math.log(n_classes)


def transformer_layers(backbone: nn.Module) -> tuple[nn.ModuleList, list[nn.Module]]:
    """The backbone's transformer layers, and the modules applied after the last one (final norm).

    Whisper: ``encoder.layers`` (+ ``encoder.layer_norm``); wav2vec2/WavLM/HuBERT/data2vec:
    ``model.encoder.layers`` (+ ``model.encoder.layer_norm`` when it is applied last, i.e. stable layer norm).
    """
    encoder = getattr(backbone, "encoder", None)
    if isinstance(getattr(encoder, "layers", None), nn.ModuleList):
        return encoder.layers, [encoder.layer_norm]
    model = getattr(backbone, "model", None)
    encoder = getattr(model, "encoder", None)
    if isinstance(getattr(encoder, "layers", None), nn.ModuleList):
        after = [encoder.layer_norm] if getattr(model.config, "do_stable_layer_norm", False) else []
        return encoder.layers, after
    raise MetalearnError(f"cannot find the transformer layers of {type(backbone).__name__}")


def freeze_all_but_top(backbone: nn.Module, n: int | None) -> int:
    """Freeze the backbone except its top ``n`` transformer layers (None: everything trains).

    Returns the number of backbone parameters left trainable. Heads are outside the backbone and untouched.
    """
    if n is None:
        backbone.requires_grad_(True)
    else:
        layers, after = transformer_layers(backbone)
        if n > len(layers):
            raise MetalearnError(
                f"trainable_layers={n} but the backbone has {len(layers)} transformer layers")
        backbone.requires_grad_(False)
        for module in list(layers)[len(layers) - n :] + (after if n else []):
            module.requires_grad_(True)
    _keep_frozen_buffers_like(backbone)
    return sum(p.numel() for p in backbone.parameters() if p.requires_grad)


def _keep_frozen_buffers_like(backbone: nn.Module) -> None:
    """Parameters the library itself keeps frozen stay frozen (Whisper's sinusoidal position table)."""
    positions = getattr(getattr(backbone, "encoder", None), "embed_positions", None)
    if isinstance(positions, nn.Embedding):
        positions.requires_grad_(False)


@torch.no_grad()
def count_correct(logits: Tensor, y: Tensor) -> int:
    """Number of rows of ``logits`` [B, C] whose argmax equals ``y`` [B]."""
    return int((logits.argmax(dim=-1) == y).sum())
