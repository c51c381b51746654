"""The pre-finetuning loop: AdamW, linear warmup then decay, accumulation, early stopping, optional DDP; and the
scoring it selects by (:func:`evaluate`: accuracy per corpus, sharded over ranks and summed) and the untouched
pass the frozen probe reads (:func:`pooled_part`).

Under ``torch.distributed`` (see :mod:`metalearn.pretune.distributed`) the model is wrapped in
DistributedDataParallel; every rank draws the same corpus per step and processes its share of the global
batch. Each rank's loss is scaled by ``world_size * local_sum / global_batch`` so that DDP's gradient
average equals the single-process gradient of the whole global batch, even for uneven shares.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from metalearn.pretune.config import PretuneConfig
from metalearn.pretune.data import CorpusSplits, KeyedBatches, ProportionalCorpusSampler, SplitAudio, collate
from metalearn.pretune.distributed import all_sum, is_main, world
from metalearn.pretune.model import MultiHeadClassifier, count_correct, scaled_loss
from metalearn.pretune.schedule import EarlyStopping, linear_warmup_decay
from metalearn.util.devices import autocast
from metalearn.util.errors import MetalearnError

log = logging.getLogger(__name__)
__all__ = ["EarlyStopping", "TrainResult", "linear_warmup_decay", "steps_per_epoch", "train"]
Evaluator = Callable[[MultiHeadClassifier, Mapping[str, CorpusSplits], str, PretuneConfig, torch.device],
                     dict[str, float]]


@dataclasses.dataclass
class TrainResult:
    """Outcome of :func:`train`; accuracies of the best (restored) state, epochs counted from 1."""

    best_epoch: int
    epochs: int
    steps: int
    dev_accuracy: dict[str, float]
    dev_mean: float
    test_accuracy: dict[str, float]
    test_mean: float
    seconds: float


def steps_per_epoch(cfg: PretuneConfig, splits: Mapping[str, CorpusSplits]) -> int:
    """Optimizer steps per epoch: ``cfg.steps_per_epoch``, else one pass over all training utterances."""
    if cfg.steps_per_epoch is not None:
        return cfg.steps_per_epoch
    n_train = sum(len(s.train) for s in splits.values())
    return max(1, math.ceil(n_train / (cfg.batch_size * cfg.grad_accum)))


def train_batches(splits: Mapping[str, CorpusSplits], cfg: PretuneConfig) -> Iterator:
    """Endless (waves [b, T], lengths [b], labels [b], corpus) of this rank's share of each global batch."""
    world_size, rank = world()
    sampler = ProportionalCorpusSampler({c: len(s.train) for c, s in splits.items()}, cfg.batch_size,
                                        cfg.seed, world_size, rank)
    data = SplitAudio(dict(splits), "train", cfg.max_seconds)
    return iter(DataLoader(data, batch_sampler=KeyedBatches(sampler), collate_fn=collate,
                           num_workers=cfg.num_workers))


@dataclasses.dataclass
class TrainLoop:
    """What the epoch loop needs besides the model: optimizer, schedule, scaler, the batch stream, the classes per
    corpus and the optimizer steps per epoch."""

    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    batches: Iterator
    n_classes: dict[str, int]
    steps: int


def train_epoch(net: nn.Module, loop: TrainLoop, cfg: PretuneConfig, device: torch.device, steps: int) -> float:
    """``steps`` optimizer steps of ``cfg.grad_accum`` micro-batches; returns the mean global batch loss.

    ``loop.batches`` yields (waves [b, T], lengths [b], labels [b], corpus) and, to use the model's trunk cache,
    the clips' keys [b] (:func:`metalearn.pretune.data.collate`)."""
    batches, opt, sched, scaler, n_classes = loop.batches, loop.opt, loop.sched, loop.scaler, loop.n_classes
    world_size = world()[0]
    params = [p for p in net.parameters() if p.requires_grad]
    total = 0.0
    for _ in range(steps):
        for micro in range(cfg.grad_accum):
            batch = next(batches)  # (waves, lengths, y, corpus[, clip keys]): without keys nothing is cached
            waves, lengths, y, corpus = batch[:4]
            keys = batch[4] if len(batch) > 4 else None
            last = micro == cfg.grad_accum - 1
            sync = contextlib.nullcontext() if last or world_size == 1 else net.no_sync()
            with sync:
                with autocast(device, cfg.precision):
                    logits = net(waves.to(device), lengths.to(device), corpus, keys)
                loss = scaled_loss(logits, y.to(device), n_classes[corpus], "sum")
                loss = loss * world_size / cfg.batch_size  # DDP averages over ranks: the global mean
                scaler.scale(loss / cfg.grad_accum).backward()
            total += loss.item() / world_size
        scaler.unscale_(opt)
        if cfg.max_grad_norm:
            nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        scaler.step(opt)
        scaler.update()
        sched.step()
        opt.zero_grad(set_to_none=True)
    return all_sum([total], device)[0] / (steps * cfg.grad_accum)


def training_loop(model: MultiHeadClassifier, splits: Mapping[str, CorpusSplits], cfg: PretuneConfig,
                  device: torch.device) -> TrainLoop:
    """AdamW over the trainable parameters (backbone at ``lr``, heads and mix weights at ``head_lr``), warmup +
    linear decay over all epochs, the batch stream."""
    backbone = {id(p) for p in model.backbone.parameters()}
    groups = [{"params": [p for p in model.parameters() if p.requires_grad and id(p) in backbone], "lr": cfg.lr},
              {"params": [p for p in model.parameters() if p.requires_grad and id(p) not in backbone],
               "lr": cfg.head_lr or cfg.lr}]
    # fused: one pass over each tensor per step (CPU and CUDA), 3 against 10-17 ms per step for a Whisper-base layer
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, weight_decay=cfg.weight_decay,
                            fused=device.type in ("cpu", "cuda"))
    steps = steps_per_epoch(cfg, splits)
    total_steps = steps * cfg.max_epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, linear_warmup_decay(int(round(cfg.warmup_fraction * total_steps)), total_steps))
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and cfg.precision == "fp16")
    n_classes = {c: len(s.labels) for c, s in splits.items()}
    return TrainLoop(opt, sched, scaler, train_batches(splits, cfg), n_classes, steps)


def train(model: MultiHeadClassifier, splits: Mapping[str, CorpusSplits], cfg: PretuneConfig,
          device: torch.device, curve_path: Path | None = None,
          evaluator: Evaluator | None = None) -> TrainResult:
    """Train ``model`` in place on ``splits``; it ends holding the best dev state. Only rank 0 writes.

    ``evaluator(model, splits, part, cfg, device) -> {corpus: accuracy}`` scores dev after every epoch
    (early stopping on the mean over corpora) and test once, for the best state only (default :func:`evaluate`).
    """
    evaluator = evaluator or evaluate
    world_size = world()[0]
    if cfg.batch_size < world_size:
        raise MetalearnError(f"batch_size {cfg.batch_size} is the GLOBAL batch; it must be >= world size "
                             f"{world_size} (e.g. --set batch_size={world_size})")
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)  # transformers' SpecAugment masks (wav2vec2 family) draw from numpy's global RNG
    model.to(device).train()
    net: nn.Module = model
    if world_size > 1:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                      find_unused_parameters=True)
    loop = training_loop(model, splits, cfg, device)
    stopper = EarlyStopping(cfg.patience, cfg.min_delta)
    best_state, best_epoch, best_dev = None, 0, {}
    curve = open(curve_path, "w", encoding="utf-8") if curve_path and is_main() else None
    try:
        for epoch in range(1, cfg.max_epochs + 1):
            loss = train_epoch(net, loop, cfg, device, loop.steps)
            dev = evaluator(model, splits, "dev", cfg, device)
            if stopper.update(mean_accuracy(dev)) or best_state is None:
                best_state, best_epoch, best_dev = snapshot(model), epoch, dev
            row = dict(epoch=epoch, step=epoch * loop.steps, train_loss=loss, lr=loop.sched.get_last_lr()[0],
                       dev_accuracy=dev, dev_mean=mean_accuracy(dev), best_epoch=best_epoch,
                       seconds=round(time.perf_counter() - start, 2))
            if curve:
                curve.write(json.dumps(jsonable(row)) + "\n")
                curve.flush()
            log.info("epoch %d step %d: train loss %.4f, dev accuracy %.4f %s", epoch, row["step"], loss,
                     row["dev_mean"], _fmt(dev))
            if stopper.stop:
                log.info("early stop after epoch %d (best epoch %d)", epoch, best_epoch)
                break
    finally:
        if curve:
            curve.close()
        del loop  # stops the loader's workers
    model.load_state_dict(best_state)
    test = evaluator(model, splits, "test", cfg, device)
    log.info("best epoch %d: dev %.4f, test %.4f %s", best_epoch, mean_accuracy(best_dev),
             mean_accuracy(test), _fmt(test))
    return TrainResult(best_epoch, epoch, epoch * steps_per_epoch(cfg, splits), best_dev,
                       mean_accuracy(best_dev), test, mean_accuracy(test), time.perf_counter() - start)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the state dict."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _fmt(accuracy: Mapping[str, float]) -> str:
    return " ".join(f"{c}={a:.3f}" for c, a in accuracy.items())


def jsonable(value: object) -> object:
    """``value`` with NaN floats as None (strict JSON)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


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
