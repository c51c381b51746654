"""Embed with several pretune variants at once, sharing the forward of the layers they all left frozen.

A variant pre-finetuned with ``trainable_layers = n`` keeps the backbone's input embedding and lower
layers bit-identical to the untouched model. Its hidden states up to there are the same tensors, so
this computes them once per batch (:meth:`trunk`) and runs only each variant's own top layers
(:meth:`forward_from`). The results go into each variant's ordinary cache folder, exactly where
:func:`metalearn.features.embeddings.extract` looks, so what follows is a cache hit. Backbones without a
trunk (the SSL families), or sharing nothing, are extracted one by one: they have no shared forward
to save.

:class:`TrunkCache` is the same idea across training: a backbone fine-tuned with its lower layers frozen
computes their frame-level output once per clip; every later epoch and trial starts from it.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from metalearn.data.manifest import Utterance
from metalearn.features.backbones import SpeechBackbone, pad_batch
from metalearn.features.backbones.base import Trunk, length_mask
from metalearn.features.backbones.pooling import masked_mean
from metalearn.features.embeddings import (
    EmbeddingConfig,
    ShardStore,
    cache_store,
    file_identity,
    plan_batches,
    pooled_states,
    prefetch_audio,
)
from metalearn.util.devices import autocast, resolve_device
from metalearn.util.progress import progress

log = logging.getLogger(__name__)


def shared_layers(a: SpeechBackbone, b: SpeechBackbone) -> int | None:
    """How many transformer layers ``a`` and ``b`` share bit for bit on top of an identical input embedding.

    None when they share no trunk at all (another family, input mode or front end).
    """
    if type(a) is not type(b) or not hasattr(a, "trunk_modules") or getattr(a, "mode", None) != getattr(b, "mode", 0):
        return None
    n_layers = a.num_states - 1
    if n_layers != b.num_states - 1:
        return None
    shared = None
    for depth in range(n_layers + 1):
        pairs = zip(a.trunk_modules(depth), b.trunk_modules(depth), strict=True)
        if not all(_same(m, n) for m, n in pairs):
            break
        shared = depth
    return shared


def _same(m: torch.nn.Module, n: torch.nn.Module) -> bool:
    sa, sb = m.state_dict(), n.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def fill_caches(rows: Sequence[Utterance], backbones: Sequence[SpeechBackbone], cfg: EmbeddingConfig) -> bool:
    """Extract what each backbone's cache lacks, sharing the trunk; False (nothing done) when they share none."""
    depths = [shared_layers(backbones[0], b) for b in backbones[1:]]
    if len(backbones) < 2 or any(d is None for d in depths):
        return False
    depth = min(depths)
    device = resolve_device(cfg.device)
    stores = [cache_store(b.to(device).eval(), cfg) for b in backbones]
    tables = [set(s.load()) for s in stores]
    identities = [file_identity(u.path) if os.path.exists(u.path) else "" for u in rows]
    todo = [i for i, ident in enumerate(identities) if ident and any(ident not in t for t in tables)]
    if not todo:
        return True
    durations = [min(rows[i].duration_s, cfg.max_seconds or np.inf) for i in todo]
    batches = [[todo[j] for j in b] for b in plan_batches(durations, cfg.batch_seconds, cfg.max_batch)]
    dtype = np.float16 if cfg.storage == "float16" else np.float32
    shared = _SharedPass(backbones, stores, tables, depth, device, cfg.precision, dtype)
    log.info("embedding %d clips with %d variants sharing %d frozen layers", len(todo), len(backbones), depth)
    with progress(float(sum(durations)), f"embeddings x{len(backbones)} (shared trunk)", "s",
                  bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s audio [{elapsed}<{remaining}]") as bar:
        for kept, waves, bad in prefetch_audio(rows, batches, cfg.max_seconds, cfg.prefetch):
            if kept:
                _one_batch(shared, [identities[i] for i in kept], waves)
            step = sum(min(rows[i].duration_s, cfg.max_seconds or np.inf) for i in kept + [i for i, _ in bad])
            bar.update(min(step, bar.total - bar.n))  # float sums in another order may overshoot
    return True


@dataclass(frozen=True)
class _SharedPass:
    """One extraction shared by V variants: their ``backbones`` [V], cache ``stores`` [V] and the identities each
    store already holds (``tables`` [V], updated as shards are written); the ``depth`` frozen layers they share,
    run on ``device`` at ``precision``; embeddings stored as ``dtype``."""

    backbones: Sequence[SpeechBackbone]
    stores: list[ShardStore]
    tables: list[set[str]]
    depth: int
    device: torch.device
    precision: str
    dtype: type


@torch.inference_mode()
def _one_batch(shared: _SharedPass, idents: list[str], waves: list[torch.Tensor]) -> None:
    """One padded batch: the shared trunk once, then each variant's own layers; one shard per variant."""
    batch, lengths = pad_batch(waves)
    with autocast(shared.device, shared.precision):
        trunk = shared.backbones[0].trunk(batch.to(shared.device), lengths.to(shared.device), shared.depth)
        for backbone, store, table in zip(shared.backbones, shared.stores, shared.tables, strict=True):
            need = [j for j, ident in enumerate(idents) if ident not in table]
            if not need:
                continue
            out = backbone.forward_from(trunk, shared.depth)
            pooled = pooled_states(out)
            store.append([idents[j] for j in need], pooled[need].astype(shared.dtype))
            table.update(idents[j] for j in need)


def caches_trunk(backbone: SpeechBackbone) -> bool:
    """Whether ``backbone``'s lower layers can be cached while its top trains: it has a trunk
    (``trunk`` / ``forward_from``) and no dropout, so its frozen layers give the same output in training."""
    if not all(hasattr(backbone, name) for name in ("trunk", "forward_from")):
        return False
    cfg = getattr(getattr(backbone, "encoder", None), "config", None)
    return all(getattr(cfg, k, 0.0) == 0.0 for k in ("dropout", "attention_dropout", "activation_dropout"))


class TrunkCache:
    """The hidden state after a backbone's first ``depth`` layers, per clip, in memory (LRU past ``max_bytes``).

    Each clip's states [F_i, D] are computed as if it were alone (the trimmed input mode masks every other
    clip's padding, so a batch gives the same values), and :meth:`batch` pads them back into the
    :class:`Trunk` that ``backbone.forward_from(trunk, depth)`` continues: the same hidden states as
    ``backbone(waves, lengths)`` from ``depth`` on, without running the layers below.

    With ``pool_below`` it also keeps each clip's mean-pooled states 0..depth-1 (:meth:`pooled_below`), for a
    reader of every state (a learned mix) whose lower states are frozen.
    """

    def __init__(self, backbone: SpeechBackbone, depth: int, max_bytes: int, chunk: int = 8,
                 pool_below: bool = False) -> None:
        if not caches_trunk(backbone):
            raise ValueError(f"{type(backbone).__name__} has no cacheable trunk")
        self.backbone, self.depth, self.max_bytes, self.chunk = backbone, depth, max_bytes, chunk
        self.pool_below = pool_below
        self.states: OrderedDict[str, tuple[Tensor, int]] = OrderedDict()  # key -> (states [F, D], frames)
        self.pooled: dict[str, Tensor] = {}  # key -> pooled states 0..depth-1 [depth, D] (pool_below)
        self.bytes = 0
        self.computed = 0  # clips run through the trunk (a measure of reuse)

    @torch.no_grad()
    def _fill(self, keys: list[str], waves: list[Tensor]) -> None:
        device = self.backbone.device
        for i in range(0, len(keys), self.chunk):
            batch, lengths = pad_batch(waves[i : i + self.chunk])
            trunk = self.backbone.trunk(batch.to(device), lengths.to(device), self.depth)
            x = trunk.states[self.depth]  # [B, F, D]
            below = (masked_mean(torch.stack(trunk.states[: self.depth]), trunk.frames)
                     if self.pool_below and self.depth else None)  # [depth, B, D]
            for j, key in enumerate(keys[i : i + self.chunk]):
                frames = int(trunk.frames[j])
                kept = x[j, :frames] if trunk.mask is not None else x[j]  # no mask: every frame is input
                self.states[key] = (kept.clone(), frames)
                self.bytes += kept.numel() * kept.element_size()
                if self.pool_below:
                    self.pooled[key] = below[:, j].clone() if below is not None else x.new_zeros(0, x.shape[-1])
            self.computed += len(keys[i : i + self.chunk])

    def _evict(self, keep: int) -> None:
        """Drop the least recently used clips past ``max_bytes``, never the ``keep`` most recent."""
        while self.bytes > self.max_bytes and len(self.states) > keep:
            key, (old, _) = self.states.popitem(last=False)
            self.bytes -= old.numel() * old.element_size()
            self.pooled.pop(key, None)

    def batch(self, keys: Sequence[str], waves: Sequence[Tensor]) -> Trunk:
        """The trunk of clips ``keys`` (audio ``waves`` [T_i], used for the ones not cached yet).

        Only the state at ``depth`` is kept: the trunk's lower states repeat it (pool layers >= depth only).
        """
        got = self.clips(keys, waves)
        width = max(x.shape[0] for x, _ in got)
        x = torch.zeros(len(got), width, got[0][0].shape[-1], dtype=got[0][0].dtype, device=got[0][0].device)
        for i, (states, _) in enumerate(got):
            x[i, : states.shape[0]] = states
        frames = torch.tensor([f for _, f in got], device=x.device)
        mask = None
        if getattr(self.backbone, "mode", "trimmed") == "trimmed" and bool((frames < width).any()):
            keep = length_mask(frames, width)  # as WhisperBackbone.trunk builds it
            mask = torch.zeros(keep.shape, dtype=x.dtype, device=x.device)
            mask = mask.masked_fill(~keep, torch.finfo(x.dtype).min)[:, None, None, :]
        return Trunk([x] * (self.depth + 1), mask, frames)

    def clips(self, keys: Sequence[str], waves: Sequence[Tensor]) -> list[tuple[Tensor, int]]:
        """Each clip's state at ``depth`` [F_i, D] (the rows attention spans) and its frames (the first rows, pooled),
        unpadded, in the order of ``keys`` (audio ``waves`` [T_i] used for the ones not cached yet)."""
        missing = [i for i, key in enumerate(keys) if key not in self.states]
        if missing:
            self._fill([keys[i] for i in missing], [waves[i] for i in missing])
        got = []
        for key in keys:
            self.states.move_to_end(key)
            got.append(self.states[key])
        self._evict(keep=len(set(keys)))
        return got

    def pooled_below(self, keys: Sequence[str]) -> Tensor:
        """Mean-pooled states 0..depth-1 of clips ``keys`` [depth, B, D] (``pool_below``; call :meth:`batch` with
        the same keys first)."""
        if not self.pool_below:
            raise ValueError("this TrunkCache keeps no pooled lower states (pool_below=False)")
        return torch.stack([self.pooled[key] for key in keys], dim=1)
