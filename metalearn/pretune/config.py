"""The pre-finetuning recipe as one dataclass, two presets, and type-checked ``key=value`` overrides."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from metalearn.util.config_merge import merge_overrides
from metalearn.util.errors import MetalearnError

PRECISIONS = ("fp32", "bf16", "fp16")
LABELS = ("canonical", "raw")
SPLITS = ("speaker", "utterance")


@dataclasses.dataclass
class PretuneConfig:
    """Hyperparameters of multi-corpus pre-finetuning. Defaults are Paper A's recipe.

    Attributes:
        lr: peak learning rate of AdamW (paper: 3e-5).
        batch_size: utterances per micro-batch, GLOBAL across DDP ranks (paper: 1).
        grad_accum: micro-batches per optimizer step (paper: 4).
        warmup_fraction: share of all optimizer steps spent in linear warmup (paper: 10%), then linear decay
            to 0 at ``max_epochs``.
        max_epochs: upper bound on epochs (paper: 200).
        patience: epochs without an improvement of more than ``min_delta`` before stopping (paper: 3).
        min_delta: early-stopping threshold on the mean dev accuracy (paper: 0.02).
        max_seconds: audio cropped to its first ``max_seconds`` (paper: 5 s).
        trainable_layers: None trains the whole backbone up to the head's state (paper: the whole backbone, head
            on the last state); n trains the n transformer layers ENDING at the head's state (layers h-n+1..h
            for state h; for "mix" the top n), plus the heads (and mix weights); the layers below are frozen
            (their output cached, ``cache_trunk``) and the layers above the head's state never run.
        steps_per_epoch: optimizer steps per epoch; None = one pass over the training data
            (ceil(train utterances / (batch_size * grad_accum))).
        layer: the feature the heads read: a hidden state (index into the L + 1 states, negative from the top)
            mean-pooled, or "mix": SUPERB's learned softmax-weighted sum of all L + 1 pooled states (the
            weights train with the heads and are saved with the variant).
        standardize: the heads (and a mix) read each pooled state z-scored with the untouched backbone's mean and
            std over the training clips (fixed before training; saved with the variant), as the probe does
            (Paper A: off).
        head_lr: learning rate of the heads and the mix weights (None: ``lr``); the backbone layers use ``lr``.
        split: ``speaker`` (speaker-independent dev/test: IEMOCAP by session, other corpora by speaker; own
            splits kept) or ``utterance`` (Paper A's random 80/10/10 by utterance: leaks speakers and
            sentences into dev/test; for exact reproduction only). See :mod:`metalearn.pretune.data`.
        sentence_disjoint: with ``split=speaker``, drop train clips whose text is said in dev or test.
        cache_trunk: keep the frozen layers' output per clip in memory (computed once; Whisper backbones).
        trunk_cache_mb: the most memory that cache may hold (least recently used clips dropped past it).
        pack_clips: with the cache, run a batch's clips end to end through the trainable Whisper layers (no padded
            frame computed; :mod:`metalearn.features.backbones.whisper_packed`), the padded batch's values up to
            float rounding; false: padded to the longest clip.
        probe_l2: L2 strengths the frozen linear probe tries (the best on dev is reported).
        weight_decay: AdamW weight decay (the Hugging Face Trainer default the paper used: 0).
        max_grad_norm: gradient clipping (Trainer default 1.0); None or 0 disables.
        eval_batch_size: utterances per dev/test batch.
        seed: seeds the splits, the sampler, head initialisation and dropout.
        device: "auto" (cuda when available), "cpu", "cuda", "cuda:N".
        precision: fp32, bf16 or fp16 autocast on CUDA (fp16 with a gradient scaler); CPU runs fp32.
        num_workers: audio-loading worker processes.
        labels: what each corpus's head classifies: ``canonical`` emotions (the manifest's ``emotion``
            column) or the corpus's ``raw`` labels (its ``raw_label`` column: IEMOCAP keeps hap and exc
            apart, as Paper A pre-finetunes on IEMOCAP's raw categorical labels).
    """

    lr: float = 3e-5
    batch_size: int = 1
    grad_accum: int = 4
    warmup_fraction: float = 0.1
    max_epochs: int = 200
    patience: int = 3
    min_delta: float = 0.02
    max_seconds: float = 5.0
    trainable_layers: int | None = None
    steps_per_epoch: int | None = None
    layer: int | str = -1
    standardize: bool = False
    head_lr: float | None = None
    split: str = "speaker"
    sentence_disjoint: bool = True
    cache_trunk: bool = True
    trunk_cache_mb: int = 2048
    pack_clips: bool = True
    probe_l2: list[float] = dataclasses.field(default_factory=lambda: [1e-4, 1e-3, 1e-2, 1e-1])
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    eval_batch_size: int = 8
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    num_workers: int = 4
    labels: str = "canonical"

    def __post_init__(self) -> None:
        validate(self)


def validate(cfg: PretuneConfig) -> None:
    """One-line errors for values no run could use."""
    positive = ("lr", "batch_size", "grad_accum", "max_epochs", "max_seconds", "eval_batch_size")
    for name in positive:
        if not getattr(cfg, name) > 0:
            raise MetalearnError(f"pretune {name} must be > 0, got {getattr(cfg, name)!r}")
    if not 0.0 <= cfg.warmup_fraction < 1.0:
        raise MetalearnError(f"pretune warmup_fraction must be in [0, 1), got {cfg.warmup_fraction!r}")
    for name in ("patience", "num_workers"):
        if getattr(cfg, name) < 0:
            raise MetalearnError(f"pretune {name} must be >= 0, got {getattr(cfg, name)!r}")
    for name in ("trainable_layers", "steps_per_epoch"):
        value = getattr(cfg, name)
        if value is not None and value < (0 if name == "trainable_layers" else 1):
            raise MetalearnError(f"pretune {name} must be None or a positive count, got {value!r}")
    if cfg.precision not in PRECISIONS:
        raise MetalearnError(f"pretune precision {cfg.precision!r}: expected one of {', '.join(PRECISIONS)}")
    if isinstance(cfg.layer, str) and cfg.layer != "mix":
        raise MetalearnError(f"pretune layer {cfg.layer!r}: expected a hidden-state index or \"mix\"")
    if cfg.split not in SPLITS:
        raise MetalearnError(f"pretune split {cfg.split!r}: expected one of {', '.join(SPLITS)}")
    if cfg.head_lr is not None and not cfg.head_lr > 0:
        raise MetalearnError(f"pretune head_lr must be None or > 0, got {cfg.head_lr!r}")
    if not cfg.probe_l2 or min(cfg.probe_l2) < 0:
        raise MetalearnError(f"pretune probe_l2 must be a non-empty list of values >= 0, got {cfg.probe_l2!r}")
    if cfg.labels not in LABELS:
        raise MetalearnError(f"pretune labels {cfg.labels!r}: expected one of {', '.join(LABELS)}")


PRESETS: dict[str, dict[str, object]] = {
    # Paper A (Chen & Yu 2023): lr 3e-5, batch 1 x accumulation 4, warmup 10 %, <= 200 epochs, early
    # stopping (patience 3, threshold 0.02) on dev accuracy, 5 s crops, the whole backbone trained.
    "paper": {},
    # The synthetic demo corpora on 2 CPU cores in two minutes: the head on state 1 (z-scored, lr 1e-3), the one
    # layer that makes it trained at 5e-5 (the z-score magnifies its changes ~20x), 2 full passes, 3 s crops.
    # On CREMA-D + IEMOCAP: source dev 0.556 against the frozen probe's 0.484 (1e-5 x 3 passes: 0.531; 1e-4 x 2:
    # 0.545); test 0.479 against 0.523 (results/demo/pretune.md).
    "cpu-small": dict(lr=5e-5, head_lr=1e-3, standardize=True, batch_size=8, grad_accum=1, max_epochs=2,
                      patience=2, min_delta=0.0, max_seconds=3.0, layer=1, trainable_layers=1, steps_per_epoch=None,
                      eval_batch_size=16, num_workers=0),
}


def preset(name: str) -> PretuneConfig:
    """The named preset (``paper`` or ``cpu-small``)."""
    if name not in PRESETS:
        raise MetalearnError(f"unknown pretune preset {name!r}; expected one of: {', '.join(PRESETS)}")
    return PretuneConfig(**PRESETS[name])


def apply_overrides(cfg: PretuneConfig, items: Sequence[str]) -> PretuneConfig:
    """``cfg`` with ``key=value`` items merged (OmegaConf, like the experiment config); ``none`` sets an
    optional field to None. Unknown keys and unparsable values are one-line errors."""
    return merge_overrides(cfg, items, "pretune override: ")
