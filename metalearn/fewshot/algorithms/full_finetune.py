"""Paper A's plain fine-tuning from audio: the whole backbone (or its top layers) plus a linear head, per episode.

The slow path next to the embedding algorithms, on the same episodes. Every episode builds a fresh backbone
from ``backbone_factory`` (so each trial starts from the pretune variant's weights), adds a zero-initialised
linear head on the mean-pooled ``hidden_states[layer]``, and trains with AdamW, linear warmup then linear
decay, and gradient accumulation. Given validation items, the validation macro-F1 is measured after every
epoch; training stops after ``patience`` epochs without improvement and the best epoch's weights (ties: the
earliest) predict the query. Without validation items the last epoch is used.

With the lower layers frozen (``trainable_layers = n``) on a backbone with a cacheable trunk (Whisper; see
:func:`metalearn.features.shared_trunk.caches_trunk`), their frame-level output is computed once per clip and
kept in memory (:class:`~metalearn.features.shared_trunk.TrunkCache`, bounded by ``trunk_cache_mb``); every
epoch and trial runs only the top layers and the head, from one backbone whose trainable weights are reset to
the factory's before each episode. The results equal the from-audio path's (tests/test_trunk_finetune.py).
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
from metalearn.features.backbones import BackboneOutput, SpeechBackbone, pad_batch
from metalearn.features.backbones.pooling import masked_mean
from metalearn.features.shared_trunk import TrunkCache, caches_trunk
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
    trunk_cache_mb: int = 2048  # the frozen layers' output per clip, kept in memory up to this (0: from audio)
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
        self.trunks: TrunkCache | None = None  # set once a backbone with a cacheable trunk was seen
        self._initial: dict[str, Tensor] = {}  # its trainable weights as the factory built them

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

    def _trunk_depth(self, backbone: SpeechBackbone) -> int | None:
        """The frozen depth whose output can be cached, or None (train from audio)."""
        n = self.cfg.trainable_layers
        if self.cfg.trunk_cache_mb <= 0 or n is None or not caches_trunk(backbone):
            return None
        depth = backbone.num_states - 1 - n
        return depth if self.cfg.layer % backbone.num_states >= depth else None

    def _backbone(self) -> SpeechBackbone:
        """A backbone at the factory's weights, all but the top ``trainable_layers`` frozen: a fresh one per
        episode from audio; on a cached trunk, the one backbone, its trainable weights reset."""
        if self.trunks is not None:
            with torch.no_grad():
                for name, p in self.trunks.backbone.named_parameters():
                    if name in self._initial:
                        p.copy_(self._initial[name])
            return self.trunks.backbone
        backbone = self.factory().to(self.device)
        freeze_all_but_top(backbone, self.cfg.trainable_layers)
        depth = self._trunk_depth(backbone)
        if depth is not None:
            self.trunks = TrunkCache(backbone, depth, self.cfg.trunk_cache_mb * 2**20)
            self._initial = {n: p.detach().clone() for n, p in backbone.named_parameters() if p.requires_grad}
        return backbone

    def _encode(self, backbone: SpeechBackbone, keys: Sequence[str], waves: Mapping[str, Tensor]) -> BackboneOutput:
        """Every hidden state of clips ``keys``: from audio, or continuing their cached trunk."""
        if self.trunks is not None and backbone is self.trunks.backbone:
            trunk = self.trunks.batch(keys, [waves[k] for k in keys])
            return backbone.forward_from(trunk, self.trunks.depth)
        batch, lengths = pad_batch([waves[k] for k in keys])
        return backbone(batch.to(self.device), lengths.to(self.device))

    def _logits(self, backbone: SpeechBackbone, head: nn.Linear, keys: Sequence[str],
                waves: Mapping[str, Tensor]) -> Tensor:
        with autocast(self.device, self.cfg.precision):
            out = self._encode(backbone, keys, waves)
            pooled = masked_mean(out.hidden_states[self.cfg.layer], out.lengths.to(self.device))
            return head(pooled.float()).float()

    @torch.no_grad()
    def _predict(self, backbone: SpeechBackbone, head: nn.Linear, keys: Sequence[str],
                 waves: Mapping[str, Tensor]) -> Tensor:
        backbone.eval()
        step = max(self.cfg.batch_size, 8)
        return torch.cat([self._logits(backbone, head, keys[i : i + step], waves) for i in range(0, len(keys), step)])

    def run_episode(self, episode: Episode) -> tuple[Tensor, dict]:
        """Query logits [Q, W] (on the CPU) and info: best_epoch, val_macro_f1 (NaN without validation), seconds."""
        start, cfg = time.perf_counter(), self.cfg
        waves = self._load(episode.support + episode.validation + episode.query)
        backbone = self._backbone()  # before seeding: whatever building it draws, the episode's draws are its own
        digest = hashlib.sha256(f"{cfg.seed}\x1f{episode.episode_id}".encode()).digest()
        torch.manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
        head = nn.Linear(backbone.hidden_size, len(episode.classes)).to(self.device)
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        best_epoch, best_f1 = self._train(backbone, head, episode, waves)
        query = self._predict(backbone, head, list(episode.query), waves).cpu()
        info = {"best_epoch": best_epoch, "val_macro_f1": best_f1 if episode.validation else math.nan,
                "seconds": time.perf_counter() - start}
        return query, info

    def _train(self, backbone: SpeechBackbone, head: nn.Linear, episode: Episode, waves: Mapping[str, Tensor]
               ) -> tuple[int, float]:
        """AdamW with warmup and decay, early stopping on validation macro-F1; leaves the best epoch's weights
        in ``backbone`` and ``head``. Returns (best epoch, its validation macro-F1)."""
        cfg, ways = self.cfg, len(episode.classes)
        params = [p for p in list(backbone.parameters()) + list(head.parameters()) if p.requires_grad]
        named = {f"b.{n}": p for n, p in backbone.named_parameters() if p.requires_grad}
        named.update({f"h.{n}": p for n, p in head.named_parameters()})
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        epochs, patience = cfg.schedule(episode.k)
        support = list(episode.support)
        y_support = torch.tensor(episode.support_labels, device=self.device)
        n_batches = math.ceil(len(support) / cfg.batch_size)
        total = epochs * math.ceil(n_batches / cfg.grad_accum)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup_decay(int(cfg.warmup_fraction * total),
                                                                                     total))
        y_val = torch.tensor(episode.validation_labels)
        best_f1, best_epoch, best_state, since_best = -math.inf, 0, None, 0
        for epoch in range(1, epochs + 1):
            backbone.train()
            order = torch.randperm(len(support)).tolist()
            optimizer.zero_grad(set_to_none=True)
            for b in range(n_batches):
                idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
                logits = self._logits(backbone, head, [support[i] for i in idx], waves)
                group = min(cfg.grad_accum, n_batches - b // cfg.grad_accum * cfg.grad_accum)  # batches this step
                (nn.functional.cross_entropy(logits, y_support[idx]) / group).backward()
                if (b + 1) % cfg.grad_accum == 0 or b + 1 == n_batches:
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
            if not episode.validation:
                best_epoch = epoch
                continue
            pred = self._predict(backbone, head, list(episode.validation), waves).argmax(-1).cpu()
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
        return best_epoch, best_f1
