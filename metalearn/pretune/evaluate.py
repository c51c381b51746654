"""Accuracy per corpus on a dev or test part, sharded over DDP ranks and summed (identical on every rank)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch.utils.data import DataLoader

from metalearn.pretune.config import PretuneConfig
from metalearn.pretune.data import CorpusSplits, SplitAudio, collate
from metalearn.pretune.distributed import all_sum, world
from metalearn.pretune.model import MultiHeadClassifier, count_correct
from metalearn.util.devices import autocast


def eval_batches(splits: Mapping[str, CorpusSplits], part: str,
                 batch_size: int) -> list[list[tuple[str, int]]]:
    """Batches of (corpus, index) keys covering ``part`` of every corpus once, shortest clips first."""
    batches = []
    for corpus, s in sorted(splits.items()):
        rows = s.part(part)
        order = sorted(range(len(rows)), key=lambda i: (rows[i].duration_s, i))
        starts = range(0, len(order), batch_size)
        batches += [[(corpus, i) for i in order[j : j + batch_size]] for j in starts]
    return batches


@torch.no_grad()
def evaluate(model: MultiHeadClassifier, splits: Mapping[str, CorpusSplits], part: str,
             cfg: PretuneConfig, device: torch.device) -> dict[str, float]:
    """corpus -> accuracy on ``part`` ("dev" or "test"); NaN for a corpus whose part is empty.

    Each rank scores the batches ``[rank::world_size]``; correct and total counts are summed over ranks.
    """
    world_size, rank = world()
    was_training = model.training
    model.eval()
    data = SplitAudio(dict(splits), part, cfg.max_seconds)
    mine = eval_batches(splits, part, cfg.eval_batch_size)[rank::world_size]
    loader = DataLoader(data, batch_sampler=mine, collate_fn=collate, num_workers=cfg.num_workers)
    corpora = sorted(splits)
    correct = dict.fromkeys(corpora, 0)
    total = dict.fromkeys(corpora, 0)
    for waves, lengths, y, corpus, keys in loader:
        with autocast(device, cfg.precision):
            logits = model(waves.to(device), lengths.to(device), corpus, keys)
        correct[corpus] += count_correct(logits.float().cpu(), y)
        total[corpus] += len(y)
    sums = all_sum([correct[c] for c in corpora] + [total[c] for c in corpora], device)
    model.train(was_training)
    n = len(corpora)
    return {c: sums[i] / sums[n + i] if sums[n + i] else math.nan for i, c in enumerate(corpora)}


def mean_accuracy(accuracy: Mapping[str, float]) -> float:
    """Unweighted mean over corpora that have data (NaN when none has)."""
    values = [a for a in accuracy.values() if not math.isnan(a)]
    return sum(values) / len(values) if values else math.nan


@torch.no_grad()
def pooled_part(model: MultiHeadClassifier, splits: Mapping[str, CorpusSplits], part: str, cfg: PretuneConfig,
                device: torch.device) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """corpus -> (pooled states the head reads [N, S, D] float32 on the CPU, labels [N]) of ``part``, in the
    part's row order (one process: the frozen probe's features; it also fills the model's trunk cache)."""
    was_training = model.training
    model.eval()
    data = SplitAudio(dict(splits), part, cfg.max_seconds)
    out = {}
    for corpus, s in sorted(splits.items()):
        batches = eval_batches({corpus: s}, part, cfg.eval_batch_size)  # shortest first: little padding
        order = torch.tensor([i for batch in batches for _, i in batch], dtype=torch.long)
        xs, ys = [], []
        for waves, lengths, y, _, keys in DataLoader(data, batch_sampler=batches, collate_fn=collate,
                                                     num_workers=cfg.num_workers):
            with autocast(device, cfg.precision):
                pooled = model.pooled(waves.to(device), lengths.to(device), keys)  # [S, B, D]
            xs.append(pooled.float().transpose(0, 1).cpu())
            ys.append(y)
        x = torch.cat(xs) if xs else torch.zeros(0, len(model.read_states), model.backbone.hidden_size)
        y = torch.cat(ys) if ys else torch.zeros(0, dtype=torch.long)
        back = torch.empty_like(order)
        back[order] = torch.arange(len(order))
        out[corpus] = (x[back], y[back])  # the part's row order
    model.train(was_training)
    return out
