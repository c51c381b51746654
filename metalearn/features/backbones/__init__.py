"""Speech backbones: one contract (:class:`SpeechBackbone`) over transformers encoders.

:func:`build_backbone` maps a :class:`BackboneConfig` onto a module:
- ``source="default"`` (Whisper base) or ``"installed:tiny.en"``: OpenAI Whisper imported offline
  from the PyPI packages (see ``default.py``);
- a hub id or a local folder: ``from_pretrained`` (the family is read from its config);
- ``source="tiny"``: a small random model of ``family``, for tests and smoke runs.
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from metalearn.features.backbone_args import FAMILIES, add_backbone_args
from metalearn.features.backbones.base import BackboneOutput, SpeechBackbone, pad_batch
from metalearn.util.errors import MetalearnError

__all__ = ["BackboneConfig", "BackboneOutput", "SpeechBackbone", "build_backbone", "pad_batch", "FAMILIES",
           "add_backbone_args", "backbone_config"]


@dataclasses.dataclass(frozen=True)
class BackboneConfig:
    """Which encoder to build.

    Attributes:
        family: whisper, wav2vec2, wavlm, hubert or data2vec-audio (for "tiny"; otherwise read from
            the checkpoint's config).
        source: "default", "installed:tiny.en", "tiny", a hub id (e.g. facebook/wav2vec2-base) or a
            local folder.
        whisper_mode: "trimmed" (the utterance's own frames) or "window" (30 s windows).
        layers: keep only the first ``layers`` transformer layers (hidden states 0..layers, each the full
            model's; the layers above are never computed); None keeps them all. A run that reads low states
            only (the demo: states 0..2 of Whisper base's 0..6) embeds and fine-tunes in a fraction of the time.
    """

    family: str = "whisper"
    source: str = "default"
    whisper_mode: str = "trimmed"
    layers: int | None = None


def backbone_config(args: argparse.Namespace) -> BackboneConfig:
    """The :class:`BackboneConfig` of parsed ``--backbone-*`` options (:func:`add_backbone_args`)."""
    return BackboneConfig(args.backbone_family, args.backbone_source, args.whisper_mode, args.backbone_layers)


def build_backbone(cfg: BackboneConfig) -> SpeechBackbone:
    """The backbone ``cfg`` describes, in eval mode (only its first ``cfg.layers`` layers when set)."""
    model = _build(cfg)
    if cfg.layers is not None:
        model.keep_layers(cfg.layers)
    return model


def _build(cfg: BackboneConfig) -> SpeechBackbone:
    from metalearn.features.backbones import hf_ssl, tiny, whisper

    if cfg.family not in FAMILIES:
        raise MetalearnError(
            f"unknown backbone family {cfg.family!r}; expected one of: {', '.join(FAMILIES)}")
    if cfg.source == "tiny":  # the same random weights every time (seed 0), so caches stay valid
        with torch.random.fork_rng():
            torch.manual_seed(0)
            if cfg.family == "whisper":
                model = whisper.whisper_from_config(tiny.WHISPER_TINY, cfg.whisper_mode)
            else:
                model = hf_ssl.ssl_from_config(tiny.SSL_TINY, cfg.family)
        return model.eval()
    source = cfg.source
    installed = source == "default" or source.startswith("installed:")
    if installed:
        from metalearn.features.backbones.default import DEFAULT_WHISPER, installed_whisper_dir

        source = str(installed_whisper_dir(source.partition(":")[2] or DEFAULT_WHISPER))
    try:
        from transformers import AutoConfig

        model_type = AutoConfig.from_pretrained(source).model_type
    except OSError as e:
        hint = "a local folder with config.json, or a hub id (hub downloads need network)"
        raise MetalearnError(f"backbone source {source!r} could not be loaded: expected {hint}") from e
    if model_type == "whisper":
        model = whisper.whisper_from_pretrained(source, cfg.whisper_mode)
    else:
        model = hf_ssl.ssl_from_pretrained(source)
    if installed:  # name it by what the user asked for, not by the cache folder
        model.name = model.name.replace(source, cfg.source)
    return model.eval()

