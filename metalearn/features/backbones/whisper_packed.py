"""Whisper's encoder layer on *packed* clips: frames laid end to end, no padding, attention per clip.

A batch of clips of unequal length padded to the longest wastes the padded rows in every per-frame matmul
(CREMA-D's clips, cropped to 3 s, fill 64% of a random batch of 8). Packed, each group's clips lie end to end
along one frame axis ([E, T, D]: E groups, e.g. ``full_finetune``'s episodes, or one batch of pre-finetuning),
so the per-frame matmuls and layer norms see no padding; only attention, which is per clip, gathers them into
padded clips ([E x N, H, F, d], masked like Whisper's trimmed mode). :func:`whisper_layer` is transformers'
``WhisperEncoderLayer`` (eval mode: no dropout) written out on per-group weights ``p`` ([E, ...] each; a module's
own weights as ``{name: w[None]}`` for one group, gradients flowing to them); its output equals the padded layer's
on each clip's rows up to float rounding (tests/test_whisper_packed.py). Pooling is one batched product with each
clip's 1 / frames weights (``Packed.pool``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

Params = dict[str, Tensor]
LAYER_TYPES = ("WhisperEncoderLayer",)  # the layers :func:`whisper_layer` writes out


def packs(layers: Sequence[nn.Module]) -> bool:
    """Whether :func:`whisper_layer` can run every one of ``layers``."""
    return all(type(m).__name__ in LAYER_TYPES for m in layers)


def own_weights(layer: nn.Module) -> Params:
    """``layer``'s parameters as one group's weights {name: [1, ...]} (views: gradients reach the parameters)."""
    return {k: v[None] for k, v in layer.named_parameters()}


@dataclass(frozen=True)
class Packed:
    """The clips of E groups (``full_finetune``'s episodes; one batch of pre-finetuning: E = 1), up to N each,
    frames laid end to end per group.

    x [E, T, D]: the trunk states (zero rows past an episode's frames); slot [E, N * F]: the packed row of each
    (clip, frame) slot of the padded layout (T: a zero row); row [E, T]: the slot of each packed row (0 past the
    episode's frames); mask [E * N, 1, 1, F]: additive attention mask (finfo.min past a clip's rows); pool
    [E, N, T]: 1 / frames on each clip's pooled rows (all zero for a padded clip)."""

    x: Tensor
    slot: Tensor
    row: Tensor
    mask: Tensor
    pool: Tensor
    clips: int
    width: int

    def subset(self, index: Tensor) -> Packed:
        """The episodes ``index`` [E'] only."""
        n = self.clips
        mask = self.mask.view(-1, n, *self.mask.shape[1:])[index].flatten(0, 1)
        return Packed(self.x[index], self.slot[index], self.row[index], mask, self.pool[index], n, self.width)


def pack(clips: Sequence[Sequence[tuple[Tensor, int]]]) -> Packed:
    """``clips``: per episode, per clip, (states [L, D] attending over all L rows, frames pooled: the first ones)."""
    e_count, n = len(clips), max(max(len(c) for c in clips), 1)
    width = max([s.shape[0] for c in clips for s, _ in c] + [1])
    totals = [sum(s.shape[0] for s, _ in c) for c in clips]
    t_max = max(totals + [1])
    ref = next(s for c in clips for s, _ in c)
    x = ref.new_zeros(e_count, t_max, ref.shape[-1])
    slot = torch.full((e_count, n * width), t_max, dtype=torch.long)
    row = torch.zeros(e_count, t_max, dtype=torch.long)
    keep = torch.zeros(e_count, n, width, dtype=torch.bool)
    pool = torch.zeros(e_count, n, t_max, dtype=pooling_dtype(ref).dtype)
    for e, episode in enumerate(clips):
        start = 0
        for i, (states, frames) in enumerate(episode):
            length = states.shape[0]
            x[e, start : start + length] = states
            slot[e, i * width : i * width + length] = torch.arange(start, start + length)
            row[e, start : start + length] = torch.arange(i * width, i * width + length)
            keep[e, i, :length] = True
            pool[e, i, start : start + frames] = 1.0 / max(frames, 1)
            start += length
    mask = torch.zeros(keep.shape, dtype=ref.dtype).masked_fill(~keep, torch.finfo(ref.dtype).min)
    device = ref.device
    return Packed(x, slot.to(device), row.to(device), mask.view(e_count * n, 1, 1, width).to(device),
                  pool.to(device), n, width)


def pooling_dtype(x: Tensor) -> Tensor:
    """``x`` as pooled: float32 (from a lower autocast precision), float64 kept (the exactness tests run in it)."""
    return x if x.dtype == torch.float64 else x.float()


def _take(x: Tensor, index: Tensor) -> Tensor:
    """x [E, T, C], index [E, M] (values 0..T-1, or T: a zero row) -> [E, M, C]."""
    e_count, t, c = x.shape
    flat = torch.cat([x, x.new_zeros(e_count, 1, c)], 1).reshape(-1, c)
    offsets = torch.arange(e_count, device=x.device)[:, None] * (t + 1)
    return flat.index_select(0, (index + offsets).flatten()).view(e_count, -1, c)


def _linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """x [E, T, in] by per-episode nn.Linear weights [E, out, in] (bias [E, out]) -> [E, T, out]."""
    if bias is None:
        return torch.bmm(x, weight.transpose(1, 2))
    return torch.baddbmm(bias[:, None], x, weight.transpose(1, 2))


def layer_norm(x: Tensor, p: Params, name: str, eps: float) -> Tensor:
    """nn.LayerNorm over the last dim with per-episode weight and bias ``{name}.weight`` [E, D]."""
    out = nn.functional.layer_norm(x, x.shape[-1:], eps=eps)
    return torch.addcmul(p[f"{name}.bias"][:, None], out, p[f"{name}.weight"][:, None])


def whisper_layer(layer: nn.Module, p: Params, packed: Packed, x: Tensor) -> Tensor:
    """transformers' WhisperEncoderLayer (eval mode: no dropout) on packed frames x [E, T, D], with each episode's
    weights ``p`` (``layer``'s parameter names, [E, ...]); ``layer`` gives the shapes and constants only."""
    attn, e_count, d = layer.self_attn, x.shape[0], x.shape[-1]
    heads, dim, n, width = attn.num_heads, attn.head_dim, packed.clips, packed.width

    def proj(h: Tensor, name: str) -> Tensor:
        return _linear(h, p[f"self_attn.{name}.weight"], p.get(f"self_attn.{name}.bias"))

    def clipped(t: Tensor) -> Tensor:  # [E, T, D] -> [E * N, H, F, d]
        return _take(t, packed.slot).view(e_count * n, width, heads, dim).transpose(1, 2)

    h = layer_norm(x, p, "self_attn_layer_norm", layer.self_attn_layer_norm.eps)
    q, k, v = proj(h, "q_proj") * attn.scaling, proj(h, "k_proj"), proj(h, "v_proj")
    o = nn.functional.scaled_dot_product_attention(clipped(q), clipped(k), clipped(v), attn_mask=packed.mask,
                                                   scale=1.0)
    o = _take(o.transpose(1, 2).reshape(e_count, n * width, d), packed.row)
    x = x + proj(o, "out_proj")
    h = layer_norm(x, p, "final_layer_norm", layer.final_layer_norm.eps)
    x = x + _linear(layer.activation_fn(_linear(h, p["fc1.weight"], p["fc1.bias"])), p["fc2.weight"], p["fc2.bias"])
    if x.dtype == torch.float16:
        clamp = torch.finfo(x.dtype).max - 1000
        x = x.clamp(-clamp, clamp)
    return x
