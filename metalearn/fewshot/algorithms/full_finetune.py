"""Fine-tuning that nests head fine-tuning: ``finetune``'s head on the run's feature, plus the backbone below it.

Every method of a run reads one feature per (pretune variant, fold): hidden state ``h`` (the FeatureTable's
``layer``), mean-pooled over the valid frames of the clip cropped to ``embeddings.max_seconds``, z-scored with
the fold's :class:`~metalearn.features.featurize.Standardizer` (fitted on its meta-training speakers). This
method computes that feature from audio (:class:`~metalearn.fewshot.algorithms.base.AudioInputs`) and trains
``finetune``'s head on it with ``finetune``'s optimiser, steps, learning rate, weight decay, support
standardisation and validation selection: its config is :class:`FinetuneConfig` plus its own fields, and the
training is :mod:`.finetune`'s code. With ``trainable_layers = n``:

- ``n = 0``: nothing of the backbone trains; the features are the embedding cache's (up to float rounding) and
  :meth:`.Finetune.fit` predicts: ``finetune``'s predictions, trial by trial (tests/test_nested_finetune.py);
- ``n > 0``: the ``n`` transformer layers ending at state ``h`` (layers h-n+1..h; with h = L, the final layer
  norm too) also train, at ``backbone_lr``, full-batch, one Adam step per ``finetune`` step
  (:func:`.finetune.train_selected`). Layers above ``h`` are never run on a backbone with a trunk (Whisper);
  the difference to ``finetune`` measures backbone adaptation alone. With ``backbone_steps = s``, only the first
  ``s`` steps adapt the layers; the remaining steps train the head alone on the adapted layers' features,
  computed once (a CPU budget: a full-batch step through a Whisper-base layer costs about a second there, so
  ``finetune``'s up to 200 steps would take minutes per trial; ``s = 0`` is ``finetune`` on the same feature).

Choices that keep ``n > 0`` the same method as ``n = 0``: the backbone runs in eval mode (no dropout), so the
features at step 0 are the cache's; ``finetune``'s support standardisation (``standardize``) is computed once,
on the support features the episode starts from, and stays fixed while the layers train (one fixed affine map
before the head, like the fold's z-score); the selected checkpoint's query logits are computed when it is
reached, as ``finetune`` does. Each episode starts from the pretune variant's weights (the trainable ones are
reset before it). On a backbone with a cacheable trunk (:func:`~metalearn.features.shared_trunk.caches_trunk`),
the frozen layers' frame-level output (state h - n) is computed once per clip and kept in memory
(:class:`~metalearn.features.shared_trunk.TrunkCache`, up to ``trunk_cache_mb``; 0: from audio every step);
the results equal the from-audio path's (tests/test_trunk_finetune.py). Backbones without a trunk (the SSL
families) run their whole forward every step (their layers above ``h`` frozen and unused).

With ``episodes_per_pass = m > 1``, :meth:`FullFinetune.score` adapts up to ``m`` episodes of its batch (one
support size and way count: the runner groups them so and gives the method ``m`` episodes per unit) together
(:mod:`.full_finetune_batched`): each episode's trainable layers and head stacked along an episode dim, run by
batched matmuls over the episodes' cached trunk states (clips packed end to end, attention per clip), one
backward for every episode's gradients, per-episode Adam (``batched_adam_step``, torch.optim.Adam's update with
the head's and the layers' settings), ``backbone_steps`` and the validation selection per episode as above. Its
predictions and selected steps are the per-trial path's up to float rounding (tests/test_full_finetune_batched.py,
in float64; in float32 Adam magnifies gradients at the rounding level, e.g. a binary head's bias gradient, to
lr-sized steps, so the paths' logits may part by ~1e-4). Backbones without a cacheable Whisper trunk (the SSL
families) fall back to one episode at a time (:meth:`FullFinetune.batched`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from metalearn.data.audio import TARGET_SR, AudioError, load_audio
from metalearn.features.backbones import SpeechBackbone, pad_batch
from metalearn.features.backbones.pooling import masked_mean
from metalearn.features.backbones.whisper_packed import pooling_dtype
from metalearn.features.featurize import Standardizer
from metalearn.features.shared_trunk import TrunkCache, caches_trunk
from metalearn.fewshot.algorithms.base import AdapterBase, AdapterSpec, AudioInputs, EpisodeBatch
from metalearn.fewshot.algorithms.finetune import (
    EpisodeInputs,
    Finetune,
    FinetuneConfig,
    reference_head,
    support_standardizer,
    train_selected,
)
from metalearn.fewshot.algorithms.finetune import search_space as finetune_space
from metalearn.fewshot.algorithms.full_finetune_batched import (
    Stack,
    clip_states,
    pass_inputs,
    supports,
    train_batched,
)
from metalearn.fewshot.episodes import Episode
from metalearn.pretune.model import transformer_layers
from metalearn.util.devices import autocast, resolve_device
from metalearn.util.errors import MetalearnError
from metalearn.util.ranges import Rule

EVAL_CHUNK = 32  # clips per forward when nothing trains (validation, query, the features of n = 0)
BUCKET = 8  # clips per forward while the layers train (a full-batch step runs its support in such batches)


def length_buckets(lengths: Sequence[int], size: int) -> list[list[int]]:
    """Indices of ``lengths`` sorted by length (ties: by index) in consecutive batches of at most ``size``, so a
    batch pads to nearly its own length: [[i, ...], ...]; one batch when everything fits."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return [order[i : i + size] for i in range(0, len(order), size)] if len(order) > size else [list(range(len(order)))]


@dataclass(frozen=True)
class FullFinetuneConfig(FinetuneConfig):
    """``finetune``'s fields (the head and its training) plus the backbone's."""

    trainable_layers: int = 1  # n: the transformer layers ending at the feature's state that train (0: none)
    backbone_lr: float = 1e-4  # Adam's learning rate of those layers (the head's is ``lr``)
    backbone_steps: int | None = None  # the first n of ``steps`` adapt those layers too; the rest train the head
                                       # alone on the adapted features, computed once (None: every step)
    trunk_cache_mb: int = 2048  # the frozen layers' output per clip, kept in memory up to this (0: from audio)
    episodes_per_pass: int = 1  # episodes adapted together, weights stacked (1: one at a time; see the docstring)

    RANGES: ClassVar[dict[str, Rule]] = {**FinetuneConfig.RANGES, "trainable_layers": ">= 0", "backbone_lr": "> 0",
                                         "backbone_steps": ">= 0",
                                         "trunk_cache_mb": ">= 0", "episodes_per_pass": ">= 1",
                                         "kernel": ("torch",)}  # its head trains with the backbone, by torch


# Small and fast, for tests and CPU smoke runs: FullFinetuneConfig(**CPU_SMALL).
CPU_SMALL = dict(steps=6, eval_every=2, lr=1e-2, trainable_layers=1, backbone_lr=1e-3)


# Its studies count at most this many trials (metalearn.tune.spaces.trials_for): every trial adapts the backbone
# from audio, minutes per episode on a CPU (the first trial is the hand-set config).
TUNING_TRIALS = 4


def search_space(trial: object) -> dict:
    """``finetune``'s space (lr, steps, weight decay, standardize) plus the backbone's learning rate."""
    return {**finetune_space(trial), "backbone_lr": trial.suggest_float("backbone_lr", 1e-5, 1e-3, log=True)}


def feature_state(layer: str | int) -> int:
    """The hidden state index a feature name reads (negative: from the end); one line for any other feature."""
    try:
        return int(layer)
    except (TypeError, ValueError):
        raise MetalearnError(f"full_finetune reads one hidden state; this run's feature is {layer!r} (expected a "
                             f"state index: not features.mean_layers, not a CLAP variant or a learned mix)") from None


def continue_to(backbone: SpeechBackbone, trunk, depth: int, state: int) -> Tensor:
    """Hidden state ``state`` [B, F, D] continuing ``trunk`` (states 0..depth, a Whisper ``Trunk``) through
    layers depth+1..state only (with state = L, then the final layer norm, as ``forward_from`` does)."""
    layers, after = transformer_layers(backbone)
    x = trunk.states[depth]
    for layer in layers[depth:state]:
        x = layer(x, trunk.mask)
    for module in after if state == len(layers) else ():
        x = module(x)
    return x


class FullFinetune(AdapterBase):
    """``finetune`` on the run's feature computed from audio, with the layers below it trained too (per episode, or
    ``episodes_per_pass`` episodes together)."""

    name = "full_finetune"
    inputs = "audio"
    per_episode = True
    options_like = "finetune"

    @classmethod
    def from_spec(cls, spec: AdapterSpec, cfg: object) -> FullFinetune:
        if spec.audio is None:
            raise MetalearnError("full_finetune adapts the backbone from audio: its spec needs audio inputs")
        return cls(spec.audio, cfg, spec.seed, spec.device)

    def __init__(self, audio: AudioInputs, cfg: FullFinetuneConfig | None = None, seed: int = 0,
                 device: str | torch.device = "cpu") -> None:
        self.audio, self.cfg, self.seed = audio, cfg or FullFinetuneConfig(), seed
        self.layer = feature_state(audio.layer)
        if self.cfg.trainable_layers < 0:
            raise MetalearnError(f"full_finetune: trainable_layers {self.cfg.trainable_layers}: expected >= 0")
        self.device = resolve_device(device) if isinstance(device, str) else device
        Finetune(1, self.cfg, seed, self.device)  # refuses a bad head or standardize now, before any audio
        self.backbone: SpeechBackbone | None = None  # built by the first episode (prepare)
        self.trunks: TrunkCache | None = None
        self._initial: dict[str, Tensor] = {}  # the trainable weights as the pretune variant has them

    def prepare(self) -> SpeechBackbone:
        """The backbone (built once), every weight frozen but the trainable layers', reset to the variant's."""
        if self.backbone is None:
            backbone = self.audio.backbone().to(self.device).eval()
            states, n = backbone.num_states, self.cfg.trainable_layers
            if not -states <= self.layer < states:
                raise MetalearnError(f"full_finetune: feature state {self.layer} is outside the backbone's "
                                     f"{states} hidden states")
            self.state = self.layer % states
            if n > self.state:
                raise MetalearnError(f"full_finetune: trainable_layers {n} exceeds the feature's state "
                                     f"{self.state} (it trains the layers ending at that state)")
            layers, after = transformer_layers(backbone)
            backbone.requires_grad_(False)
            for module in [*layers[self.state - n : self.state], *(after if n and self.state == len(layers) else [])]:
                module.requires_grad_(True)
            self._initial = {k: p.detach().clone() for k, p in backbone.named_parameters() if p.requires_grad}
            if self.cfg.trunk_cache_mb > 0 and caches_trunk(backbone):
                self.trunks = TrunkCache(backbone, self.state - n, self.cfg.trunk_cache_mb * 2**20)
            self.finetune = Finetune(backbone.hidden_size, self.cfg, self.seed, self.device)
            standardizer = self.audio.standardizer
            self.standardizer = None if standardizer is None else Standardizer(
                standardizer.shift.to(self.device), standardizer.scale.to(self.device))
            self.backbone = backbone
        with torch.no_grad():
            for k, p in self.backbone.named_parameters():
                if k in self._initial:
                    p.copy_(self._initial[k])
        return self.backbone

    def load(self, keys: Sequence[str]) -> dict[str, Tensor]:
        """Each clip's waveform [T] at 16 kHz, cropped as the embedding cache crops it."""
        waves = {}
        for key in dict.fromkeys(keys):
            path = self.audio.paths.get(key)
            if path is None:
                raise MetalearnError(f"utterance {key!r}: no audio path known for it")
            if not os.path.isfile(path):
                raise MetalearnError(f"utterance {key!r}: audio file {str(path)!r} does not exist")
            try:
                waves[key] = torch.from_numpy(load_audio(path, TARGET_SR, self.audio.max_seconds))
            except AudioError as e:
                raise MetalearnError(f"utterance {key!r}: audio file {str(path)!r} is {e}") from None
        return waves

    def features(self, keys: Sequence[str], waves: dict[str, Tensor]) -> Tensor:
        """The run's feature of clips ``keys``: state h, mean-pooled, z-scored with the fold's statistics, [B, D]
        (with gradients into the trainable layers while grad is enabled). The clips run in batches of similar
        length (:func:`length_buckets`): each clip's state does not depend on its batch-mates (Whisper's trimmed
        mode masks them), so only the padding computed changes, not the feature (up to float rounding)."""
        buckets = length_buckets([waves[k].shape[0] for k in keys], BUCKET if torch.is_grad_enabled() else EVAL_CHUNK)
        if len(buckets) == 1:
            return self._features(keys, waves)
        pooled = torch.cat([self._features([keys[i] for i in bucket], waves) for bucket in buckets])
        order = torch.tensor([i for bucket in buckets for i in bucket], device=pooled.device)
        return torch.empty_like(pooled).index_copy_(0, order, pooled)  # back in the order of ``keys``

    def _features(self, keys: Sequence[str], waves: dict[str, Tensor]) -> Tensor:
        """:meth:`features` of one batch, [B, D]."""
        backbone, depth = self.backbone, self.state - self.cfg.trainable_layers
        with autocast(self.device, self.audio.precision):
            if not hasattr(backbone, "trunk"):  # no trunk: the whole forward
                batch, lengths = pad_batch([waves[k] for k in keys])
                out = backbone(batch.to(self.device), lengths.to(self.device))
                hidden, frames = out.hidden_states[self.state], out.lengths
            else:
                if self.trunks is not None:
                    trunk = self.trunks.batch(keys, [waves[k] for k in keys])
                else:
                    batch, lengths = pad_batch([waves[k] for k in keys])
                    trunk = backbone.trunk(batch.to(self.device), lengths.to(self.device), depth)
                hidden, frames = continue_to(backbone, trunk, depth, self.state), trunk.frames
        pooled = masked_mean(pooling_dtype(hidden), frames.to(self.device))
        return pooled if self.standardizer is None else self.standardizer.apply(pooled)

    def score(self, batch: EpisodeBatch) -> Tensor:
        """Query logits [E, Q, W] of the batch's episodes, one adaptation each (padded rows are 0): up to
        ``episodes_per_pass`` episodes at a time where the backbone allows (:meth:`batched`), else one by one."""
        logits = torch.zeros(*batch.query_y.shape, batch.ways)
        episodes, size = list(batch.episodes), self.cfg.episodes_per_pass
        if size > 1 and self.batched():
            queries = [q for i in range(0, len(episodes), size) for q in self.run_episodes(episodes[i : i + size])[0]]
        else:
            queries = [self.run_episode(episode)[0] for episode in episodes]
        for i, query in enumerate(queries):
            logits[i, : len(query)] = query
        return logits

    def batched(self) -> bool:
        """Whether this backbone's episodes can be adapted together (:func:`.full_finetune_batched.supports`:
        Whisper, whose frozen trunk is cached; the SSL families run one episode at a time)."""
        backbone = self.prepare()
        layers, after = transformer_layers(backbone)
        n = self.cfg.trainable_layers
        return supports(backbone, layers[self.state - n : self.state], after if self.state == len(layers) else [])

    def run_episodes(self, episodes: Sequence[Episode]) -> tuple[list[Tensor], list[int]]:
        """Episodes of one shape (support size, ways) adapted together: each one's query logits [Q_i, W] (on the
        CPU) and selected step, as :meth:`run_episode` gives them (up to float rounding)."""
        waves = self.load([k for ep in episodes for k in ep.support + ep.validation + ep.query])
        backbone = self.prepare()
        layers, after = transformer_layers(backbone)
        n, ways = self.cfg.trainable_layers, len(episodes[0].classes)
        if len({(len(ep.support), len(ep.classes)) for ep in episodes}) > 1:
            raise MetalearnError("full_finetune: the episodes of one pass need one support size and one way count")
        device = self.device

        def precision() -> AbstractContextManager:  # every forward's autocast
            return autocast(device, self.audio.precision)

        clips = clip_states(backbone, self.trunks, self.state - n, waves, EVAL_CHUNK, precision)

        def initial_heads(mean: Tensor, scale: Tensor) -> dict[str, Tensor]:
            first = self.finetune.initial_heads(1, ways, mean[:1], scale[:1], mean.dtype)  # the per-trial draw
            return {k: v.expand(len(episodes), *v.shape[1:]).clone() for k, v in first.items()}

        inputs = pass_inputs(episodes, clips, device,
                             lambda pooled: pooled if self.standardizer is None else self.standardizer.apply(pooled),
                             initial_heads, lambda x, y: support_standardizer(x, y, self.cfg.standardize))
        stack = Stack(layers[self.state - n : self.state], after if self.state == len(layers) else [], n > 0)
        query, steps = train_batched(stack, inputs, ways, self.cfg, precision)
        return [query[i, : len(ep.query)].detach().cpu() for i, ep in enumerate(episodes)], steps.tolist()

    def run_episode(self, episode: Episode) -> tuple[Tensor, dict]:
        """Query logits [Q, W] (on the CPU) and info: best_step (the selected checkpoint), seconds."""
        start = time.perf_counter()
        waves = self.load(episode.support + episode.validation + episode.query)
        self.prepare()
        ways = len(episode.classes)
        sy = torch.tensor(episode.support_labels, device=self.device)
        vy = torch.tensor(episode.validation_labels, device=self.device)
        if self.cfg.trainable_layers == 0:
            query, step = self._fit_head(episode, waves, sy, vy, ways)
        else:
            query, step = self._adapt(episode, waves, sy, vy, ways)
        return query.detach().cpu(), {"best_step": step, "seconds": time.perf_counter() - start}

    def _fit_head(self, episode: Episode, waves: dict[str, Tensor], sy: Tensor, vy: Tensor, ways: int
                  ) -> tuple[Tensor, int]:
        """n = 0: ``finetune``'s own fit on the episode's features (one episode of [1, ...] tensors)."""
        with torch.no_grad():
            sx, qx = self.features(episode.support, waves), self.features(episode.query, waves)
            vx = self.features(episode.validation, waves)[None] if episode.validation else None
        fit = self.finetune.fit(sx[None], sy[None], qx[None], ways, vx, vy[None] if vx is not None else None)
        return fit.logits[0], int(fit.best_step[0])

    def _adapt(self, episode: Episode, waves: dict[str, Tensor], sy: Tensor, vy: Tensor, ways: int
               ) -> tuple[Tensor, int]:
        """n > 0: ``finetune``'s head and the trainable layers, by :func:`.finetune.train_selected`."""
        with torch.no_grad():
            start = self.features(episode.support, waves)[None]  # [1, S, D]
        mean, scale = support_standardizer(start, sy[None], self.cfg.standardize)  # [1, 1, D] each
        init = self.finetune.initial_heads(1, ways, mean, scale, start.dtype)
        head = reference_head({k: v[0] for k, v in init.items()})

        support, steps, frozen = list(episode.support), [0], {}
        limit = self.cfg.backbone_steps

        def model(keys: Sequence[str]) -> Tensor:
            steps[0] += keys is support  # train_selected reads the support once per step
            if limit is None or steps[0] <= limit:
                return head((self.features(keys, waves) - mean[0]) / scale[0])
            if tuple(keys) not in frozen:  # the layers are done adapting: their features, once
                with torch.no_grad():
                    frozen[tuple(keys)] = self.features(keys, waves)
            return head((frozen[tuple(keys)] - mean[0]) / scale[0])

        trainable = [p for p in self.backbone.parameters() if p.requires_grad]
        groups = [{"params": list(head.parameters())}, {"params": trainable, "lr": self.cfg.backbone_lr}]
        val = (list(episode.validation), vy) if episode.validation else None
        return train_selected(model, groups, EpisodeInputs(support, sy, list(episode.query), val), ways, self.cfg)

