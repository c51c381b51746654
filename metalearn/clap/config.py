"""GEmo-CLAP's configuration: the model, head training, training from audio, and the run's CLAP stage.

Plain dataclasses and their checks, with no torch import, so that reading a run's config (``metalearn.run.config``,
``--print-config``, ``status``) does not load the speech and text towers. The modules that use them
(:mod:`.model`, :mod:`.heads`, :mod:`.train`, :mod:`.variant`) re-export them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, replace

from metalearn.util.errors import MetalearnError

LOSSES = ("clip", "emo", "ml", "sl")
PROJECTIONS = ("linear", "mlp")
LABEL_FIELD = "{label}"
TEXT_DEFAULT = "default"
ENCODERS = ("frozen", "finetune")


@dataclass
class ClapConfig:
    """The CLAP heads, text side and loss.

    Attributes:
        text_source: text tower source: "default" (all-MiniLM-L6-v2), "tiny", a hub id or a local folder.
        embed_dim: E, the shared space's dimension.
        projection: "linear" or "mlp" (Linear-GELU-Linear, as in CLAP).
        layer: which of the backbone's L + 1 hidden states is mean-pooled (negative counts from the top).
        train_text: fine-tune the text encoder too (default: frozen; projections always train).
        prompt: text template; ``{label}`` is replaced by the emotion name.
        init_scale: initial logit scale of both directions.
        variant: loss variant: clip, emo, ml or sl (see ``clap_loss``).
        alpha: emotion weight of ml and sl.
    """

    text_source: str = TEXT_DEFAULT
    embed_dim: int = 256
    projection: str = "mlp"
    layer: int = -1
    train_text: bool = False
    prompt: str = "emotion is {label}"
    init_scale: float = 1 / 0.07
    variant: str = "sl"
    alpha: float = 0.8


def check_config(cfg: ClapConfig) -> None:
    """Raise :class:`MetalearnError` on a field the model cannot use (loss fields are checked by ClapLoss)."""
    if cfg.projection not in PROJECTIONS:
        raise MetalearnError(f"unknown CLAP projection {cfg.projection!r}, expected one of {', '.join(PROJECTIONS)}")
    if cfg.embed_dim < 1:
        raise MetalearnError(f"CLAP embed_dim {cfg.embed_dim}, expected a dimension >= 1")
    if LABEL_FIELD not in cfg.prompt:
        raise MetalearnError(f"CLAP prompt {cfg.prompt!r}, expected a template containing {LABEL_FIELD}")


def with_loss(cfg: ClapConfig, alphas: Mapping[str, float], loss: str) -> ClapConfig:
    """``cfg`` with the loss ``loss`` (emo, ml, sl, clip) and its emotion weight ``alphas[loss]``."""
    return replace(cfg, variant=loss, alpha=float(alphas[loss]))


@dataclasses.dataclass
class ClapHeadsConfig:
    """How the heads train on cached features (the model itself is :class:`ClapConfig`)."""

    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-3
    eval_every: int = 25
    dev_fraction: float = 0.1     # LOSO: share of the training sessions held out for step selection (variants
                                  # use their sources' own dev split)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "lr", "eval_every"):
            if not getattr(self, name) > 0:
                raise MetalearnError(f"clap heads {name} must be > 0, got {getattr(self, name)!r}")
        if self.batch_size < 2:
            raise MetalearnError(f"clap heads batch_size must be >= 2 (a contrastive batch), got {self.batch_size}")
        if not 0 < self.dev_fraction < 1:
            raise MetalearnError(f"clap heads dev_fraction must be in (0, 1), got {self.dev_fraction}")


@dataclasses.dataclass
class ClapTrainConfig:
    """How CLAP pre-finetuning trains (the model itself is :class:`ClapConfig`)."""

    lr: float = 5e-5                 # backbone layers
    head_lr: float = 1e-3            # projections and logit scales
    text_lr: float = 1e-5            # the text encoder, when the model's train_text is set (else unused)
    batch_size: int = 16             # contrastive batch: more items, more negatives and positives per row
    steps_per_epoch: int | None = None  # None: one pass over the training utterances
    max_epochs: int = 10
    patience: int = 3
    warmup_fraction: float = 0.1
    max_seconds: float = 5.0
    trainable_layers: int | None = 2  # None: the whole backbone
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    eval_batch_size: int = 16
    seed: int = 0
    precision: str = "fp32"

    def __post_init__(self) -> None:
        for name in ("lr", "head_lr", "text_lr", "batch_size", "max_epochs", "max_seconds", "eval_batch_size"):
            if not getattr(self, name) > 0:
                raise MetalearnError(f"clap training {name} must be > 0, got {getattr(self, name)!r}")
        if self.batch_size < 2:
            raise MetalearnError(f"clap training batch_size must be >= 2 (a contrastive batch), got {self.batch_size}")


@dataclasses.dataclass
class ClapStageConfig:
    """Which CLAP variants a run trains, and how.

    Attributes:
        losses: one variant per loss: emo (Emo-CLAP), ml (ML-GEmo-CLAP), sl (SL-GEmo-CLAP), clip.
        corpora: the source corpora they train on, "+"-joined (``all``: every source corpus).
        alphas: each loss's alpha (emotion weight of ml and sl; ignored by emo and clip).
        encoder: ``frozen`` (heads on cached features) or ``finetune`` (top backbone layers too, from audio).
        exclude: emotions left out of training (MSP-Podcast's "other" names no emotion to prompt for).
        seed: the sources' train/dev/test split (the supervised variants' default is 0 too).
        model: the heads, text tower and prompt; its ``variant`` and ``alpha`` come from ``losses``/``alphas``.
        heads: head training on cached features (``frozen``).
        train: training from audio (``finetune``).
        device: where ``finetune`` trains (auto: cuda when available).
    """

    losses: list[str] = dataclasses.field(default_factory=list)
    corpora: str = "all"
    alphas: dict[str, float] = dataclasses.field(
        default_factory=lambda: {"emo": 1.0, "ml": 0.9, "sl": 0.8, "clip": 1.0})
    encoder: str = "frozen"
    exclude: list[str] = dataclasses.field(default_factory=lambda: ["other"])
    seed: int = 0
    model: ClapConfig = dataclasses.field(default_factory=lambda: ClapConfig(embed_dim=128))
    heads: ClapHeadsConfig = dataclasses.field(default_factory=ClapHeadsConfig)
    train: ClapTrainConfig = dataclasses.field(default_factory=ClapTrainConfig)
    device: str = "auto"


def check_stage(cfg: ClapStageConfig, key: str = "pretune.clap") -> None:
    """One-line errors for values no type can refuse."""
    unknown = [v for v in cfg.losses if v not in LOSSES]
    if unknown:
        raise MetalearnError(f"config key '{key}.losses': {unknown} are not CLAP losses ({', '.join(LOSSES)})")
    if len(set(cfg.losses)) != len(cfg.losses):
        raise MetalearnError(f"config key '{key}.losses': {cfg.losses} lists a loss twice")
    missing = [v for v in cfg.losses if v not in cfg.alphas]
    if missing:
        raise MetalearnError(f"config key '{key}.alphas': no alpha for {missing}")
    if cfg.encoder not in ENCODERS:
        raise MetalearnError(f"config key '{key}.encoder': {cfg.encoder!r} is not one of {', '.join(ENCODERS)}")
    if cfg.encoder == "frozen" and cfg.model.train_text:
        raise MetalearnError(f"config key '{key}.model.train_text': the frozen encoder trains heads on cached "
                             f"features with a frozen text tower; set it false or encoder=finetune")
