"""The backbone with one linear head per corpus, Paper A's class-count-scaled loss, and layer freezing."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from metalearn.features.backbones.base import SpeechBackbone
from metalearn.features.backbones.pooling import masked_mean
from metalearn.features.backbones.whisper_packed import own_weights, pack, packs, pooling_dtype, whisper_layer
from metalearn.features.shared_trunk import TrunkCache, caches_trunk
from metalearn.util.errors import MetalearnError


def head_state(layer: int | str, num_states: int) -> int:
    """The highest hidden state the head reads: ``layer`` as an index 0..L (negative from the top), L for "mix"."""
    if layer == "mix":
        return num_states - 1
    if isinstance(layer, str) or not -num_states <= layer < num_states:
        raise MetalearnError(f"pretune layer {layer!r}: expected a hidden-state index in {-num_states}.."
                             f"{num_states - 1} or \"mix\" (the backbone has {num_states} hidden states)")
    return layer % num_states


class MultiHeadClassifier(nn.Module):
    """Backbone -> masked mean of hidden state ``layer`` (or a learned softmax mix of all states) -> the
    corpus's own linear head. The backbone runs only up to the head's state (Whisper; other families run whole).

    Args:
        backbone: any :class:`SpeechBackbone`.
        label_sets: corpus -> its class names (head ``corpus`` has ``len(labels)`` outputs).
        layer: index into the backbone's L + 1 hidden states (negative counts from the top), or "mix".

    ``trunk_cache`` (set by :meth:`cache_trunk`) holds the frozen layers' output per clip; forwards given clip
    ``keys`` continue from it. :meth:`set_norm` fixes a per-state z-score of the pooled states (the untouched
    backbone's train statistics, as the probe standardizes) applied before the mix and the heads.
    """

    def __init__(self, backbone: SpeechBackbone, label_sets: Mapping[str, Sequence[str]],
                 layer: int | str = -1) -> None:
        super().__init__()
        self.top = head_state(layer, backbone.num_states)
        self.backbone = backbone
        self.layer = layer
        self.mix = nn.Parameter(torch.zeros(backbone.num_states)) if layer == "mix" else None
        self.label_sets = {c: tuple(labels) for c, labels in label_sets.items()}
        self.heads = nn.ModuleDict({c: nn.Linear(backbone.hidden_size, len(labels))
                                    for c, labels in sorted(self.label_sets.items())})
        self.trunk_cache: TrunkCache | None = None
        self.pack_clips = False
        n = len(self.read_states)
        self.register_buffer("shift", torch.zeros(n, backbone.hidden_size))
        self.register_buffer("scale", torch.ones(n, backbone.hidden_size))

    def set_norm(self, shift: Tensor, scale: Tensor) -> None:
        """Fix the z-score of the pooled states the head reads: ``(pooled - shift) / scale``, both [S, D]."""
        with torch.no_grad():
            self.shift.copy_(shift)
            self.scale.copy_(scale)

    @property
    def read_states(self) -> list[int]:
        """The hidden states the head reads: [top] for one state, 0..L for a mix."""
        return list(range(self.top + 1)) if self.mix is not None else [self.top]

    def cache_trunk(self, depth: int, max_bytes: int, pack_clips: bool = True) -> bool:
        """Keep the output of the first ``depth`` layers per clip (they must be frozen); False when this backbone
        cannot (no trunk, or dropout). With ``pack_clips``, forwards from the cache run the clips end to end."""
        if not caches_trunk(self.backbone) or not 0 <= depth <= self.top:
            return False
        self.trunk_cache = TrunkCache(self.backbone, depth, max_bytes, pool_below=self.mix is not None)
        self.pack_clips = pack_clips
        return True

    def pooled(self, waves: Tensor, lengths: Tensor, keys: Sequence[str] | None = None) -> Tensor:
        """Mean-pooled states :attr:`read_states` [S, B, D] of ``waves`` [B, T], ``lengths`` [B]."""
        b = self.backbone
        if not hasattr(b, "trunk"):  # no truncated forward: run it whole
            out = b(waves, lengths)
            return masked_mean(out.hidden_states[self.read_states], out.lengths)
        cache = self.trunk_cache
        if cache is not None and keys is not None:
            clips = [w[:n] for w, n in zip(waves, lengths.tolist(), strict=True)]
            layers = b.encoder.layers[cache.depth : self.top]
            if self.pack_clips and packs(layers):
                return self._pooled_packed(cache, layers, keys, clips)
            trunk, depth = cache.batch(keys, clips), cache.depth
        else:
            trunk, depth = b.trunk(waves, lengths, 0), 0
        states = list(trunk.states[: depth + 1])
        for layer in b.encoder.layers[depth : self.top]:
            states.append(layer(states[-1], trunk.mask))
        if self.top == b.num_states - 1:
            states[-1] = b.encoder.layer_norm(states[-1])
        if self.mix is None:
            return masked_mean(states[self.top], trunk.frames)[None]
        if cache is not None and keys is not None:
            return torch.cat([cache.pooled_below(keys), masked_mean(torch.stack(states[depth:]), trunk.frames)])
        return masked_mean(torch.stack(states), trunk.frames)

    def _pooled_packed(self, cache: TrunkCache, layers: Sequence[nn.Module], keys: Sequence[str],
                       clips: list[Tensor]) -> Tensor:
        """:meth:`pooled` from the trunk cache with the clips ([T_i] each) packed end to end (no padded frame runs
        through the layers; :mod:`~metalearn.features.backbones.whisper_packed`): [S, B, D], the padded path's values
        up to float rounding."""
        b = self.backbone
        packed = pack([cache.clips(keys, clips)])
        states = [packed.x]  # [1, T, D] each
        for layer in layers:
            states.append(whisper_layer(layer, own_weights(layer), packed, states[-1]))
        if self.top == b.num_states - 1:
            states[-1] = b.encoder.layer_norm(states[-1])
        pooled = torch.cat([torch.bmm(packed.pool, pooling_dtype(x)) for x in states])  # [S, B, D]
        if self.mix is None:
            return pooled[-1:]
        return torch.cat([cache.pooled_below(keys), pooled])

    def mix_weights(self) -> Tensor | None:
        """The softmax weights [L + 1] of a mix (None for one state)."""
        return None if self.mix is None else torch.softmax(self.mix.float(), dim=0)

    def embed(self, waves: Tensor, lengths: Tensor, keys: Sequence[str] | None = None) -> Tensor:
        """``waves`` [B, T], ``lengths`` [B] -> pooled features [B, D]: the state, or the mixed states, each
        z-scored by the fixed norm (:meth:`set_norm`)."""
        pooled = self.pooled(waves, lengths, keys)
        pooled = (pooled - self.shift[:, None].to(pooled.dtype)) / self.scale[:, None].to(pooled.dtype)
        if self.mix is None:
            return pooled[0]
        return torch.einsum("s,sbd->bd", self.mix_weights().to(pooled.dtype), pooled)

    def forward(self, waves: Tensor, lengths: Tensor, corpus: str, keys: Sequence[str] | None = None) -> Tensor:
        """``waves`` [B, T] at 16 kHz, ``lengths`` [B] -> logits [B, C_corpus]."""
        pooled = self.embed(waves, lengths, keys)
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


def freeze_for_head(backbone: nn.Module, n: int | None, top: int) -> int:
    """Freeze the backbone except the ``n`` transformer layers ENDING at hidden state ``top`` (layers
    top-n+1..top, 1-based: layer i makes state i), with the final norm when ``top`` is the last state and n > 0.
    None: everything up to ``top`` trains. Layers above ``top`` stay frozen (a head on ``top`` never runs them).

    Returns the number of backbone parameters left trainable. Heads are outside the backbone and untouched.
    """
    layers, after = transformer_layers(backbone)
    last = top == len(layers)
    if n is None:
        backbone.requires_grad_(True)
        for module in list(layers)[top:] + ([] if last else after):
            module.requires_grad_(False)
    else:
        if n > top:
            raise MetalearnError(f"trainable_layers={n} but the head reads hidden state {top}, which only "
                                 f"{top} transformer layer(s) make; use trainable_layers <= {top}")
        backbone.requires_grad_(False)
        for module in list(layers)[top - n : top] + (after if n and last else []):
            module.requires_grad_(True)
    _keep_frozen_buffers_like(backbone)
    return sum(p.numel() for p in backbone.parameters() if p.requires_grad)


def frozen_depth(n: int | None, top: int) -> int | None:
    """How many transformer layers below the trainable ones are frozen (their output can be cached): top - n;
    None when the whole backbone trains."""
    return None if n is None else top - n


def _keep_frozen_buffers_like(backbone: nn.Module) -> None:
    """Parameters the library itself keeps frozen stay frozen (Whisper's sinusoidal position table)."""
    positions = getattr(getattr(backbone, "encoder", None), "embed_positions", None)
    if isinstance(positions, nn.Embedding):
        positions.requires_grad_(False)


@torch.no_grad()
def count_correct(logits: Tensor, y: Tensor) -> int:
    """Number of rows of ``logits`` [B, C] whose argmax equals ``y`` [B]."""
    return int((logits.argmax(dim=-1) == y).sum())
