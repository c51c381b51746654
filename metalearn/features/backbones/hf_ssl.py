"""wav2vec2, WavLM, HuBERT and data2vec-audio encoders from transformers, behind one contract."""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import AutoConfig, AutoModel, PretrainedConfig

from metalearn.features.backbones.base import BackboneOutput, SpeechBackbone, checked_depth, length_mask

FAMILIES: dict[str, str] = {
    "wav2vec2": "wav2vec2", "wavlm": "wavlm", "hubert": "hubert", "data2vec-audio": "data2vec-audio",
}


class SSLBackbone(SpeechBackbone):
    """A self-supervised speech encoder (raw waveform in, 50 frames per second out).

    Args:
        model: a transformers ``Wav2Vec2Model``-like module (``output_hidden_states`` supported).
        normalize: zero-mean, unit-variance per utterance over its valid samples, as the models'
            feature extractors do (``do_normalize``).
        name: description for logs and cache keys.
    """

    def __init__(self, model: torch.nn.Module, normalize: bool = True, name: str = "ssl") -> None:
        super().__init__()
        self.model = model
        self.normalize = normalize
        self.name = name
        cfg = model.config
        self.num_states = cfg.num_hidden_layers + 1
        self.hidden_size = cfg.hidden_size
        # Group-norm feature encoders (wav2vec2-base) were trained without attention masks on
        # zero-padded input; layer-norm ones (WavLM, large models) expect a mask.
        self.use_mask = getattr(cfg, "feat_extract_norm", "layer") == "layer"

    def forward(self, waves: Tensor, lengths: Tensor) -> BackboneOutput:
        lengths = lengths.to(waves.device)
        mask = length_mask(lengths, waves.shape[1])
        if self.normalize:
            n = lengths.clamp(min=1).to(waves.dtype)[:, None]
            mean = (waves * mask).sum(1, keepdim=True) / n
            var = (((waves - mean) * mask) ** 2).sum(1, keepdim=True) / n
            waves = torch.where(mask, (waves - mean) / torch.sqrt(var + 1e-7), torch.zeros_like(waves))
        out = self.model(waves, attention_mask=mask.long() if self.use_mask else None,
                         output_hidden_states=True)
        frames = self.model._get_feat_extract_output_lengths(lengths).long()
        return BackboneOutput(torch.stack(out.hidden_states), frames)


    def keep_layers(self, layers: int) -> None:
        """Only the first ``layers`` transformer layers (a stable-layer-norm model's final norm goes with the
        layers above, so state ``layers`` stays the full model's). Keeping all of them changes nothing."""
        encoder = self.model.encoder
        if checked_depth(layers, len(encoder.layers), self.name) == len(encoder.layers):
            return
        encoder.layers = torch.nn.ModuleList(list(encoder.layers)[:layers])
        if getattr(self.model.config, "do_stable_layer_norm", False):
            encoder.layer_norm = torch.nn.Identity()
        self.num_states = layers + 1
        self.name = f"{self.name}:layers={layers}"


def ssl_from_pretrained(source: str, family: str | None = None) -> SSLBackbone:
    """Load from a hub id or a local folder (``from_pretrained``); the family is read from its config."""
    model = AutoModel.from_pretrained(source)
    return SSLBackbone(model, name=f"{model.config.model_type}:{source}")


def ssl_from_config(config: PretrainedConfig | dict, family: str = "wav2vec2") -> SSLBackbone:
    """A randomly initialised model from a (small) config, for tests."""
    if isinstance(config, dict):
        config = AutoConfig.for_model(FAMILIES[family], **config)
    model = AutoModel.from_config(config)
    return SSLBackbone(model, name=f"{config.model_type}:random")
