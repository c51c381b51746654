"""Paper A's plain fine-tuning from audio: the whole backbone (or its top layers) plus a linear head, per episode.

The slow path next to the embedding algorithms, on the same episodes. Every episode builds a fresh backbone
from ``backbone_factory`` (so each trial starts from the pretune variant's weights), adds a zero-initialised
linear head on the mean-pooled ``hidden_states[layer]``, and trains with AdamW, linear warmup then linear
decay, and gradient accumulation. Given validation items, the validation macro-F1 is measured after every
epoch; training stops after ``patience`` epochs without improvement and the best epoch's weights (ties: the
earliest) predict the query. Without validation items the last epoch is used.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from metalearn.data.audio import AudioError, load_audio
from metalearn.features.backbones import SpeechBackbone, pad_batch
from metalearn.features.backbones.pooling import masked_mean
from metalearn.fewshot.algorithms.base import AdapterBase, AdapterSpec, EpisodeBatch
from metalearn.fewshot.episodes import Episode
from metalearn.pretune.model import freeze_all_but_top
from metalearn.pretune.schedule import linear_warmup_decay
from metalearn.util.devices import autocast, resolve_device
from metalearn.util.errors import MetalearnError
from metalearn.util.metrics import macro_f1


@dataclass(frozen=True)
class FullFinetuneConfig:
    """Paper A's few-shot fine-tuning hyperparameters (k is the episode's support size per class or total)."""

    lr: float = 3e-5
    batch_size: int = 1
    grad_accum: int = 4
    warmup_fraction: float = 0.1
    weight_decay: float = 0.0
    epochs_small_k: int = 200
    patience_small_k: int = 30
    epochs_large_k: int = 50
    patience_large_k: int = 5
    small_k_max: int = 8
    max_seconds: float = 5.0
    trainable_layers: int | None = None  # None: the whole backbone; n: the top n transformer layers (+ head)
    layer: int = -1
    device: str = "auto"
    precision: str = "fp32"
    seed: int = 0

    def schedule(self, k: int) -> tuple[int, int]:
        """(epochs, patience) for support size ``k``."""
        if k <= self.small_k_max:
            return self.epochs_small_k, self.patience_small_k
        return self.epochs_large_k, self.patience_large_k


# Small and fast, for tests and CPU demos: FullFinetuneConfig(**CPU_SMALL).
CPU_SMALL = dict(epochs_small_k=3, epochs_large_k=2, patience_small_k=2, patience_large_k=2, trainable_layers=1,
                 max_seconds=2.0, batch_size=4, grad_accum=1, lr=1e-3, device="cpu")


class FullFinetune(AdapterBase):
    """Fine-tunes a fresh backbone and linear head on each episode's support set, from audio."""

    name = "full_finetune"
    inputs = "audio"
    per_episode = True

    @classmethod
    def from_spec(cls, spec: AdapterSpec, cfg: object) -> FullFinetune:
        if spec.audio is None:
            raise MetalearnError("full_finetune adapts the backbone from audio: its spec needs audio inputs")
        return cls(spec.audio.backbone, spec.audio.paths, cfg)

    def score(self, batch: EpisodeBatch) -> Tensor:
        """Query logits [E, Q, W] of the batch's episodes, one fresh backbone each (padded rows are 0)."""
        logits = torch.zeros(*batch.query_y.shape, batch.ways)
        for i, episode in enumerate(batch.episodes):
            query, _ = self.run_episode(episode)
            logits[i, : len(query)] = query
        return logits

    def __init__(self, backbone_factory: Callable[[], SpeechBackbone], paths: Mapping[str, str | os.PathLike],
                 cfg: FullFinetuneConfig | None = None) -> None:
        self.factory, self.paths = backbone_factory, paths
        self.cfg = cfg or FullFinetuneConfig()
        self.device = resolve_device(self.cfg.device)

    def _load(self, keys: Sequence[str]) -> dict[str, Tensor]:
        waves = {}
        for key in dict.fromkeys(keys):
            path = self.paths.get(key)
            if path is None:
                raise MetalearnError(f"utterance {key!r}: no audio path known for it")
            if not os.path.isfile(path):
                raise MetalearnError(f"utterance {key!r}: audio file {str(path)!r} does not exist")
            try:
                waves[key] = torch.from_numpy(load_audio(path, 16_000, self.cfg.max_seconds))
            except AudioError as e:
                raise MetalearnError(f"utterance {key!r}: audio file {str(path)!r} is {e}") from None
        return waves

    def _logits(self, backbone: SpeechBackbone, head: nn.Linear, waves: list[Tensor]) -> Tensor:
        batch, lengths = pad_batch(waves)
        with autocast(self.device, self.cfg.precision):
            out = backbone(batch.to(self.device), lengths.to(self.device))
            pooled = masked_mean(out.hidden_states[self.cfg.layer], out.lengths.to(self.device))
            return head(pooled.float()).float()

    @torch.no_grad()
    def _predict(self, backbone: SpeechBackbone, head: nn.Linear, waves: list[Tensor]) -> Tensor:
        backbone.eval()
        step = max(self.cfg.batch_size, 8)
        return torch.cat([self._logits(backbone, head, waves[i : i + step]) for i in range(0, len(waves), step)])

    def run_episode(self, episode: Episode) -> tuple[Tensor, dict]:
        """Query logits [Q, W] (on the CPU) and info: best_epoch, val_macro_f1 (NaN without validation), seconds."""
        start, cfg = time.perf_counter(), self.cfg
        cache = self._load(episode.support + episode.validation + episode.query)
        digest = hashlib.sha256(f"{cfg.seed}\x1f{episode.episode_id}".encode()).digest()
        torch.manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
        ways = len(episode.classes)
        backbone = self.factory().to(self.device)
        freeze_all_but_top(backbone, cfg.trainable_layers)
        head = nn.Linear(backbone.hidden_size, ways).to(self.device)
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        params = [p for p in list(backbone.parameters()) + list(head.parameters()) if p.requires_grad]
        named = {f"b.{n}": p for n, p in backbone.named_parameters() if p.requires_grad}
        named.update({f"h.{n}": p for n, p in head.named_parameters()})
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

        epochs, patience = cfg.schedule(episode.k)
        support = [cache[k] for k in episode.support]
        y_support = torch.tensor(episode.support_labels, device=self.device)
        n_batches = math.ceil(len(support) / cfg.batch_size)
        total = epochs * math.ceil(n_batches / cfg.grad_accum)
        warmup = int(cfg.warmup_fraction * total)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup_decay(warmup, total))
        val = [cache[k] for k in episode.validation]
        y_val = torch.tensor(episode.validation_labels)
        best_f1, best_epoch, best_state, since_best = -math.inf, 0, None, 0
        for epoch in range(1, epochs + 1):
            backbone.train()
            order = torch.randperm(len(support)).tolist()
            optimizer.zero_grad(set_to_none=True)
            for b in range(n_batches):
                idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
                logits = self._logits(backbone, head, [support[i] for i in idx])
                group = min(cfg.grad_accum, n_batches - b // cfg.grad_accum * cfg.grad_accum)  # batches this step
                (nn.functional.cross_entropy(logits, y_support[idx]) / group).backward()
                if (b + 1) % cfg.grad_accum == 0 or b + 1 == n_batches:
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
            if not val:
                best_epoch = epoch
                continue
            pred = self._predict(backbone, head, val).argmax(-1).cpu()
            f1 = float(macro_f1(pred[None], y_val[None], None, ways)[0])
            if f1 > best_f1:
                best_f1, best_epoch, since_best = f1, epoch, 0
                best_state = {n: p.detach().clone() for n, p in named.items()}
            else:
                since_best += 1
                if since_best >= patience:
                    break
        if best_state is not None:
            with torch.no_grad():
                for n, p in named.items():
                    p.copy_(best_state[n])
        query = self._predict(backbone, head, [cache[k] for k in episode.query]).cpu()
        info = {"best_epoch": best_epoch, "val_macro_f1": best_f1 if val else math.nan,
                "seconds": time.perf_counter() - start}
        return query, info
