"""The config of GEmo-CLAP's leave-one-session-out experiment kind (``kind: loso``) and its checks."""

from __future__ import annotations

from dataclasses import dataclass, field

from metalearn.clap.config import (
    ENCODERS,
    LOSSES,
    ClapConfig,
    ClapHeadsConfig,
    ClapTrainConfig,
    check_config,
)
from metalearn.data.corpus_config import CorpusConfig
from metalearn.data.emotions import CANONICAL, FOUR_CLASS
from metalearn.features.backbones import BackboneConfig
from metalearn.features.embeddings import EmbeddingConfig
from metalearn.loso.folds import check_options
from metalearn.report.tracking import TrackingConfig, resolve_mode
from metalearn.util.errors import MetalearnError


@dataclass
class LosoDataConfig:
    manifests_dir: str = "data/demo/manifests"
    # The IEMOCAP corpus; ``classes`` are the task's labels (the manifest itself keeps every emotion).
    target: CorpusConfig = field(default_factory=lambda: CorpusConfig(corpus="iemocap", classes=list(FOUR_CLASS)))


@dataclass
class LosoExperimentConfig:
    """GEmo-CLAP's leave-one-session-out protocol (see the module docstring).

    ``seeds``: one run of every fold per seed; the seed draws the dev share and sets the heads'
    initialisation and batch order (``heads.seed`` and ``train.seed`` must stay 0). ``heads.dev_fraction``:
    the share of the training sessions' utterances that selects the step (frozen) or the epoch (finetune).
    ``model``: the CLAP heads, text tower and prompt; its ``variant`` and ``alpha`` come from ``losses``
    and ``alphas``. ``heads``: head training on cached features (``frozen``). ``train``: training from audio
    (``finetune``), on ``device`` (auto: cuda when available; the frozen encoder's heads train on the CPU).
    ``workers``: the frozen encoder's folds trained side by side in that many forked processes (0: one per CPU;
    1: one after another in this process); fine-tuning the encoder trains one fold at a time.
    """

    kind: str = "loso"
    name: str = "loso"
    out: str = "results/${name}"
    seeds: list[int] = field(default_factory=lambda: [0])
    device: str = "auto"
    workers: int = 0
    data: LosoDataConfig = field(default_factory=LosoDataConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    embeddings: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    encoder: str = "frozen"
    losses: list[str] = field(default_factory=lambda: ["emo", "ml", "sl"])
    alphas: dict[str, float] = field(default_factory=lambda: {"emo": 1.0, "ml": 0.9, "sl": 0.8, "clip": 1.0})
    model: ClapConfig = field(default_factory=lambda: ClapConfig(embed_dim=128))
    heads: ClapHeadsConfig = field(default_factory=ClapHeadsConfig)
    train: ClapTrainConfig = field(default_factory=ClapTrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


def validate(cfg: LosoExperimentConfig) -> None:
    """Cross-field checks no type can express; one line each, naming the config key."""
    if cfg.kind != "loso":
        raise MetalearnError(f"config key 'kind': {cfg.kind!r} in a loso experiment config")
    if cfg.workers < 0:
        raise MetalearnError(f"config key 'workers': {cfg.workers} must be >= 0 (0: one per CPU)")
    target = cfg.data.target
    if target.corpus != "iemocap":
        raise MetalearnError(f"config key 'data.target.corpus': {target.corpus!r}, expected iemocap "
                             f"(leave-one-session-out holds out IEMOCAP sessions)")
    classes = target.classes or []
    bad = [c for c in classes if c not in CANONICAL]
    if len(classes) < 2 or len(set(classes)) != len(classes) or bad:
        raise MetalearnError(f"config key 'data.target.classes': {target.classes}, expected >= 2 distinct canonical "
                             f"emotions (e.g. [neutral, happy, angry, sad])" + (f"; unknown: {bad}" if bad else ""))
    check_options(dict(target.options))
    if cfg.encoder not in ENCODERS:
        raise MetalearnError(f"config key 'encoder': {cfg.encoder!r} is not one of {', '.join(ENCODERS)}")
    unknown = [v for v in cfg.losses if v not in LOSSES]
    if not cfg.losses or unknown or len(set(cfg.losses)) != len(cfg.losses):
        raise MetalearnError(f"config key 'losses': {cfg.losses}, expected distinct CLAP losses from "
                             f"{', '.join(LOSSES)}" + (f"; unknown: {unknown}" if unknown else ""))
    for v in cfg.losses:
        alpha = cfg.alphas.get(v)
        if alpha is None or not 0 <= alpha <= 1:
            raise MetalearnError(f"config key 'alphas.{v}': {alpha}, expected an emotion weight in [0, 1]")
    try:
        check_config(cfg.model)
    except MetalearnError as e:
        raise MetalearnError(f"config key 'model': {e}") from None
    if cfg.encoder == "frozen" and cfg.model.train_text:
        raise MetalearnError("config key 'model.train_text': the frozen encoder trains heads on cached features "
                             "with a frozen text tower; set it false or encoder=finetune")
    for key, seed in (("heads.seed", cfg.heads.seed), ("train.seed", cfg.train.seed)):
        if seed != 0:
            raise MetalearnError(f"config key '{key}': {seed}; a loso experiment seeds every fold from 'seeds' "
                                 f"(e.g. seeds=[{seed}]), leave {key} at 0")
    if not cfg.seeds or len(set(cfg.seeds)) != len(cfg.seeds) or min(cfg.seeds) < 0:
        raise MetalearnError(f"config key 'seeds': {cfg.seeds} must be distinct integers >= 0")
    if cfg.tracking.wandb:
        resolve_mode(cfg.tracking)  # an unknown W&B mode fails now, not after the folds
