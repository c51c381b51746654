"""Embed with several pretune variants at once, sharing the forward of the layers they all left frozen.

A variant pre-finetuned with ``trainable_layers = n`` keeps the backbone's input embedding and lower
layers bit-identical to the untouched model. Its hidden states up to there are the same tensors, so
this computes them once per batch (:meth:`trunk`) and runs only each variant's own top layers
(:meth:`forward_from`). The results go into each variant's ordinary cache folder, exactly where
:func:`metalearn.features.embeddings.extract` looks, so what follows is a cache hit. Backbones without a
trunk (the SSL families), or sharing nothing, are extracted one by one as before.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import torch

from metalearn.data.manifest import Utterance
from metalearn.features.backbones import SpeechBackbone, pad_batch
from metalearn.features.embeddings import (
    EmbeddingConfig,
    Embeddings,
    cache_store,
    extract,
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


def extract_variants(rows: Sequence[Utterance], backbones: Sequence[SpeechBackbone], cfg: EmbeddingConfig
                     ) -> list[Embeddings]:
    """``extract(rows, b, cfg)`` for every backbone, computing the layers they share once per batch."""
    fill_caches(rows, backbones, cfg)
    return [extract(rows, b, cfg) for b in backbones]


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
    log.info("embedding %d clips with %d variants sharing %d frozen layers", len(todo), len(backbones), depth)
    with progress(float(sum(durations)), f"embeddings x{len(backbones)} (shared trunk)", "s",
                  bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s audio [{elapsed}<{remaining}]") as bar:
        for kept, waves, bad in prefetch_audio(rows, batches, cfg.max_seconds, cfg.prefetch):
            if kept:
                _one_batch(backbones, stores, tables, [identities[i] for i in kept], waves, depth, device,
                           cfg.precision, dtype)
            step = sum(min(rows[i].duration_s, cfg.max_seconds or np.inf) for i in kept + [i for i, _ in bad])
            bar.update(min(step, bar.total - bar.n))  # float sums in another order may overshoot
    return True


@torch.inference_mode()
def _one_batch(backbones, stores, tables, idents: list[str], waves: list[torch.Tensor], depth: int,
               device: torch.device, precision: str, dtype: type) -> None:
    """One padded batch: the shared trunk once, then each variant's own layers; one shard per variant."""
    batch, lengths = pad_batch(waves)
    with autocast(device, precision):
        trunk = backbones[0].trunk(batch.to(device), lengths.to(device), depth)
        for backbone, store, table in zip(backbones, stores, tables, strict=True):
            need = [j for j, ident in enumerate(idents) if ident not in table]
            if not need:
                continue
            out = backbone.forward_from(trunk, depth)
            pooled = pooled_states(out)
            store.append([idents[j] for j in need], pooled[need].astype(dtype))
            table.update(idents[j] for j in need)

