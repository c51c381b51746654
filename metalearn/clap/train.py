"""Contrastive language-audio pre-finetuning (Emo-CLAP, ML-/SL-GEmo-CLAP) of a :class:`ClapModel`.

Batches are drawn at random from the training utterances (seeded); the backbone's top layers, the two
projections and the logit scales train with AdamW (the backbone at ``lr``, the heads at ``head_lr``,
and the text encoder at ``text_lr`` when the model's ``train_text`` is set), linear warmup then decay.
After every epoch the model classifies the dev utterances zero-shot (nearest class prompt) and early
stopping keeps the epoch with the best dev UA (mean per-class recall, the measure GEmo-CLAP reports
beside WA); the test utterances are scored once, with that epoch's weights.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from metalearn.clap.config import ClapTrainConfig  # noqa: F401 - re-exported
from metalearn.clap.model import ClapModel
from metalearn.data.audio import load_audio
from metalearn.data.manifest import Utterance
from metalearn.features.backbones import pad_batch
from metalearn.pretune.model import freeze_all_but_top
from metalearn.pretune.schedule import linear_warmup_decay
from metalearn.pretune.train import snapshot
from metalearn.util.devices import autocast
from metalearn.util.errors import MetalearnError
from metalearn.util.metrics import accuracy_from_confusion, confusion, uar_from_confusion

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ClapResult:
    best_epoch: int
    epochs: int
    dev: dict[str, float]     # {"wa", "ua", "n"} of the best epoch
    test: dict[str, float]
    seconds: float


def _waves(rows: Sequence[Utterance], max_seconds: float) -> tuple[torch.Tensor, torch.Tensor]:
    return pad_batch([torch.from_numpy(load_audio(u.path, max_seconds=max_seconds)) for u in rows])


@torch.no_grad()
def zero_shot_scores(model: ClapModel, rows: Sequence[Utterance], classes: Sequence[str], cfg: ClapTrainConfig,
                     device: torch.device) -> dict[str, float]:
    """WA (accuracy) and UA (mean per-class recall) of zero-shot classification of ``rows`` into ``classes``."""
    if not rows:
        return {"wa": math.nan, "ua": math.nan, "n": 0}
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({u.emotion for u in rows} - set(index))
    if unknown:
        raise MetalearnError(f"emotions {unknown} are not among the classes {list(classes)}")
    was = model.training
    model.eval()
    preds = []
    for start in range(0, len(rows), cfg.eval_batch_size):
        waves, lengths = _waves(rows[start:start + cfg.eval_batch_size], cfg.max_seconds)
        with autocast(device, cfg.precision):
            pooled = model.pool(waves.to(device), lengths.to(device))
        preds.append(model.zero_shot_logits(pooled.float(), list(classes)).argmax(-1).cpu())
    model.train(was)
    y = torch.tensor([index[u.emotion] for u in rows])
    return {**wa_ua(torch.cat(preds), y, len(classes)), "n": len(rows)}


def wa_ua(pred: torch.Tensor, y: torch.Tensor, ways: int) -> dict[str, float]:
    """WA (accuracy) and UA (mean per-class recall) of predictions ``pred`` [N] against ``y`` [N]."""
    conf = confusion(pred[None], y[None], None, ways)
    return {"wa": float(accuracy_from_confusion(conf)[0]), "ua": float(uar_from_confusion(conf)[0])}


@dataclasses.dataclass(frozen=True)
class ClapParts:
    """The utterances of one CLAP training: ``train`` learns, ``dev`` picks the kept epoch (or step), ``test`` is
    scored once with the kept weights."""

    train: Sequence[Utterance]
    dev: Sequence[Utterance]
    test: Sequence[Utterance]


def _optimizer(model: ClapModel, cfg: ClapTrainConfig) -> torch.optim.Optimizer:
    """AdamW over three groups: heads (projections, scales) at head_lr, the backbone's trainable top
    layers at lr, the text encoder at text_lr (only when it trains); empty groups are left out."""
    freeze_all_but_top(model.backbone, cfg.trainable_layers)
    backbone = [p for p in model.backbone.parameters() if p.requires_grad]
    text = [p for p in model.text.parameters() if p.requires_grad]
    towers = {id(p) for p in model.backbone.parameters()} | {id(p) for p in model.text.parameters()}
    heads = [p for p in model.parameters() if p.requires_grad and id(p) not in towers]
    groups = [{"params": ps, "lr": lr} for ps, lr in ((heads, cfg.head_lr), (backbone, cfg.lr), (text, cfg.text_lr))
              if ps]
    return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)


def train_clap(model: ClapModel, parts: ClapParts, classes: Sequence[str], cfg: ClapTrainConfig, device: torch.device,
               curve_path: Path | None = None) -> ClapResult:
    """Train ``model`` in place on ``parts.train``; it ends holding the best ``parts.dev`` epoch's weights."""
    train, dev, test = parts.train, parts.dev, parts.test
    if len(train) < cfg.batch_size:
        raise MetalearnError(f"{len(train)} training utterances for a batch of {cfg.batch_size}")
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model.to(device).train()
    opt = _optimizer(model, cfg)
    steps = cfg.steps_per_epoch or math.ceil(len(train) / cfg.batch_size)
    total = steps * cfg.max_epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, linear_warmup_decay(int(round(cfg.warmup_fraction * total)), total))
    params = [p for g in opt.param_groups for p in g["params"]]
    best, best_epoch, best_dev, waited, curve = None, 0, {"ua": -1.0}, 0, []
    for epoch in range(1, cfg.max_epochs + 1):
        losses = []
        for _ in range(steps):
            batch = [train[i] for i in rng.choice(len(train), cfg.batch_size, replace=False)]
            waves, lengths = _waves(batch, cfg.max_seconds)
            with autocast(device, cfg.precision):
                out = model(waves.to(device), lengths.to(device), [u.emotion for u in batch], [u.gender for u in batch])
            out["loss"].backward()
            if cfg.max_grad_norm:
                nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(out["loss"].detach()))
        dev_scores = zero_shot_scores(model, dev, classes, cfg, device)
        improved = dev_scores["ua"] > best_dev["ua"]
        if improved or best is None:
            best, best_epoch, best_dev, waited = snapshot(model), epoch, dev_scores, 0
        else:
            waited += 1
        curve.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "dev": dev_scores,
                      "best_epoch": best_epoch, "seconds": round(time.perf_counter() - start, 2)})
        log.info("clap epoch %d: loss %.4f, dev zero-shot WA %.3f UA %.3f", epoch, curve[-1]["train_loss"],
                 dev_scores["wa"], dev_scores["ua"])
        if curve_path:
            curve_path.write_text("".join(json.dumps(r) + "\n" for r in curve), encoding="utf-8")
        if waited >= cfg.patience:
            break
    model.load_state_dict(best)
    test_scores = zero_shot_scores(model, test, classes, cfg, device)
    return ClapResult(best_epoch, epoch, best_dev, test_scores, time.perf_counter() - start)

