"""The Whisper encoder as a speech backbone, with two input modes.

- ``window``: Whisper's own input, each utterance zero-padded to a 30 s log-mel window (3,000 mel
  frames, 1,500 encoder frames), exactly as ``WhisperFeatureExtractor`` + ``WhisperEncoder``.
- ``trimmed``: only the utterance's own frames (positions 0..F-1 of the position table), padded
  batches masked so an utterance's states do not depend on its batch-mates. About 30 s / duration
  times less compute for short clips.
Pooling uses the valid frames in both modes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers import WhisperConfig, WhisperModel
from transformers.audio_utils import mel_filter_bank
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from metalearn.features.backbones.base import (
    BackboneOutput,
    SpeechBackbone,
    Trunk,
    checked_depth,
    length_mask,
)

N_FFT, HOP, SAMPLE_RATE, WINDOW_SECONDS = 400, 160, 16_000, 30
MODES = ("trimmed", "window")


class LogMel(nn.Module):
    """Whisper's log-mel spectrogram: ``wave`` [T] -> [n_mels, T // 160] (per utterance, exact)."""

    def __init__(self, n_mels: int = 80) -> None:
        super().__init__()
        filters = mel_filter_bank(num_frequency_bins=1 + N_FFT // 2, num_mel_filters=n_mels,
                                  min_frequency=0.0, max_frequency=8000.0, sampling_rate=SAMPLE_RATE,
                                  norm="slaney", mel_scale="slaney")
        self.register_buffer("filters", torch.from_numpy(filters).float().T, persistent=False)  # [M, 201]
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)

    def forward(self, wave: Tensor) -> Tensor:
        stft = torch.stft(wave, N_FFT, HOP, window=self.window, return_complex=True)
        power = stft[..., :-1].abs() ** 2
        log_spec = torch.clamp(self.filters @ power, min=1e-10).log10()
        log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
        return (log_spec + 4.0) / 4.0


class WhisperBackbone(SpeechBackbone):
    """Whisper's encoder: L + 1 states (conv + positions, then each layer; the last layer-normed)."""

    def __init__(self, encoder: nn.Module, mode: str = "trimmed", name: str = "whisper") -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"whisper input mode {mode!r}: expected one of {MODES}")
        self.encoder = encoder
        self.mode = mode
        cfg = encoder.config
        self.mel = LogMel(cfg.num_mel_bins)
        self.num_states = cfg.encoder_layers + 1
        self.hidden_size = cfg.d_model
        self.max_frames = cfg.max_source_positions
        self.name = f"{name}:{mode}"

    def features(self, waves: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Log-mel [B, n_mels, F] and valid mel frames [B] for the configured mode."""
        window = WINDOW_SECONDS * SAMPLE_RATE
        mels = []
        for wave, n in zip(waves, lengths.tolist(), strict=True):
            wave = wave[: min(n, window)]
            if self.mode == "window":
                wave = nn.functional.pad(wave, (0, window - wave.shape[0]))
            mels.append(self.mel(wave))
        mel_lengths = torch.clamp(lengths, max=window).to(waves.device) // HOP
        batch = torch.zeros(len(mels), mels[0].shape[0], max(m.shape[1] for m in mels), device=waves.device)
        for i, m in enumerate(mels):
            batch[i, :, : m.shape[1]] = m
        return batch, mel_lengths

    def forward(self, waves: Tensor, lengths: Tensor) -> BackboneOutput:
        return self.forward_from(self.trunk(waves, lengths, 0), 0)

    def trunk(self, waves: Tensor, lengths: Tensor, layers: int) -> Trunk:
        """The input embedding and the first ``layers`` transformer layers (shared by variants that froze them)."""
        mel, mel_lengths = self.features(waves, lengths)
        enc = self.encoder
        x = nn.functional.gelu(enc.conv1(mel))  # [B, D, F]
        if self.mode == "trimmed":  # as if each utterance were alone: zeros past its end
            x = x * length_mask(mel_lengths, x.shape[-1])[:, None, :].to(x.dtype)
        x = nn.functional.gelu(enc.conv2(x)).permute(0, 2, 1)  # [B, F / 2, D]
        frames = torch.div(mel_lengths + 1, 2, rounding_mode="floor")  # frames holding speech
        x = x + enc.embed_positions.weight[: x.shape[1]]
        mask = None
        if self.mode == "trimmed" and bool((frames < x.shape[1]).any()):
            keep = length_mask(frames, x.shape[1])  # [B, F]
            mask = torch.zeros(keep.shape, dtype=x.dtype, device=x.device)
            mask = mask.masked_fill(~keep, torch.finfo(x.dtype).min)[:, None, None, :]
        states = [x]
        for layer in enc.layers[:layers]:
            states.append(layer(states[-1], mask))
        return Trunk(states, mask, frames.long())

    def forward_from(self, trunk: Trunk, layers: int) -> BackboneOutput:
        """Every hidden state, continuing ``trunk`` (states 0..layers) through this model's layers ``layers``..L."""
        states = list(trunk.states[: layers + 1])
        for layer in self.encoder.layers[layers:]:
            states.append(layer(states[-1], trunk.mask))
        states[-1] = self.encoder.layer_norm(states[-1])
        return BackboneOutput(torch.stack(states), trunk.frames)

    def keep_layers(self, layers: int) -> None:
        """Only the first ``layers`` transformer layers; the final layer norm goes with the layers above (state
        ``layers`` stays the full model's, unnormalised). Keeping all of them changes nothing."""
        enc = self.encoder
        if checked_depth(layers, len(enc.layers), self.name) == len(enc.layers):
            return
        enc.layers = nn.ModuleList(list(enc.layers)[:layers])
        enc.layer_norm = nn.Identity()
        self.num_states = layers + 1
        self.name = f"{self.name}:layers={layers}"

    def trunk_modules(self, layers: int) -> list[nn.Module]:
        """The modules :meth:`trunk` uses for ``layers`` layers (two models share a trunk when these are equal)."""
        enc = self.encoder
        return [enc.conv1, enc.conv2, enc.embed_positions, *enc.layers[:layers]]


def whisper_from_pretrained(source: str, mode: str = "trimmed") -> WhisperBackbone:
    """The encoder of a Whisper checkpoint (hub id or local folder)."""
    encoder = WhisperModel.from_pretrained(source).get_encoder()
    return WhisperBackbone(encoder, mode, name=f"whisper:{source}")


def whisper_from_config(config: WhisperConfig | dict, mode: str = "trimmed") -> WhisperBackbone:
    """A randomly initialised encoder from a (small) config, for tests."""
    if isinstance(config, dict):
        config = WhisperConfig(**config)
    return WhisperBackbone(WhisperEncoder(config), mode, name="whisper:random")
