"""GEmo-CLAP model: a speech backbone and a text tower projected into one shared, L2-normalised space.

Audio: backbone -> masked mean of hidden state ``layer`` [B, D] -> projection -> [B, E], normalised.
Text: the prompt of each item's emotion (``"emotion is {label}"``) -> :class:`TextTower` [B, H] ->
projection -> [B, E], normalised. The loss is :class:`ClapLoss` (``clip``, ``emo``, ``ml``, ``sl``).
Projections are ``"linear"`` or CLAP's ``"mlp"`` (Linear-GELU-Linear). The text encoder is frozen (and
kept in eval mode) unless ``train_text``; projections and logit scales always train.

:meth:`ClapModel.project_audio` takes pooled features, so zero-shot classification can run on the
embedding cache's pooled vectors without audio (:meth:`ClapModel.zero_shot_logits`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from metalearn.clap.config import (  # noqa: F401 - the model's config, re-exported
    LABEL_FIELD,
    PROJECTIONS,
    ClapConfig,
    check_config,
    with_loss,
)
from metalearn.clap.loss import ClapLoss, logit_scale
from metalearn.clap.text_tower import TextTower
from metalearn.features.backbones.base import SpeechBackbone
from metalearn.features.backbones.pooling import masked_mean
from metalearn.util.errors import MetalearnError


def projection(kind: str, in_dim: int, out_dim: int) -> nn.Module:
    """``"linear"``: Linear(in, out); ``"mlp"``: Linear(in, out) - GELU - Linear(out, out). [B, in] -> [B, out]."""
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))


class ClapModel(nn.Module):
    """Speech backbone + text tower, each with a projection into the shared space, and the CLAP loss.

    Args:
        backbone: any :class:`SpeechBackbone` (hidden size D), or just D: heads over pooled features that
            come from elsewhere (the embedding cache); then :meth:`pool` and :meth:`forward` are unavailable.
        cfg: :class:`ClapConfig`.
    """

    def __init__(self, backbone: SpeechBackbone | int, cfg: ClapConfig) -> None:
        super().__init__()
        check_config(cfg)
        if not isinstance(backbone, int) and not -backbone.num_states <= cfg.layer < backbone.num_states:
            raise MetalearnError(f"CLAP layer {cfg.layer} outside the backbone's {backbone.num_states} hidden states")
        self.cfg = cfg
        self.loss = ClapLoss(cfg.variant, cfg.alpha, cfg.init_scale)
        self.backbone = None if isinstance(backbone, int) else backbone
        audio_dim = backbone if isinstance(backbone, int) else backbone.hidden_size
        self.text = TextTower(cfg.text_source)
        self.audio_projection = projection(cfg.projection, audio_dim, cfg.embed_dim)
        self.text_projection = projection(cfg.projection, self.text.hidden_size, cfg.embed_dim)
        self.text.requires_grad_(cfg.train_text)
        if not cfg.train_text:
            self.text.eval()

    def train(self, mode: bool = True) -> ClapModel:
        """As :meth:`nn.Module.train`, but a frozen text encoder stays in eval mode (no dropout)."""
        super().train(mode)
        if not self.cfg.train_text:
            self.text.eval()
        return self

    # ------------------------------------------------------------------ audio

    def pool(self, waves: Tensor, lengths: Tensor) -> Tensor:
        """``waves`` [B, T] at 16 kHz, ``lengths`` [B] -> masked mean of hidden state ``layer`` [B, D]."""
        if self.backbone is None:
            raise MetalearnError("this CLAP model holds heads only (built from a feature size): it cannot read audio")
        out = self.backbone(waves, lengths)
        return masked_mean(out.hidden_states[self.cfg.layer], out.lengths)

    def project_audio(self, pooled: Tensor) -> Tensor:
        """Pooled audio features [B, D] (e.g. from the embedding cache) -> L2-normalised [B, E]."""
        weight = next(self.audio_projection.parameters())
        return F.normalize(self.audio_projection(pooled.to(weight.device, weight.dtype)), dim=-1)

    def audio_embed(self, waves: Tensor, lengths: Tensor) -> Tensor:
        """``waves`` [B, T], ``lengths`` [B] -> L2-normalised audio embeddings [B, E]."""
        return self.project_audio(self.pool(waves, lengths))

    # ------------------------------------------------------------------ text

    def prompts(self, labels: list[str]) -> list[str]:
        """Labels (B strings) -> the template with ``{label}`` replaced by each (B strings)."""
        return [self.cfg.prompt.replace(LABEL_FIELD, str(label)) for label in labels]

    def text_embed(self, texts: list[str]) -> Tensor:
        """Texts (B strings) -> L2-normalised text embeddings [B, E] (no graph through a frozen encoder)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.cfg.train_text):
            sentences = self.text(texts)  # [B, H]
        weight = next(self.text_projection.parameters())
        return F.normalize(self.text_projection(sentences.to(weight.device, weight.dtype)), dim=-1)

    def class_embeddings(self, classes: list[str]) -> Tensor:
        """Class names (C strings) -> normalised embeddings of their prompts [C, E]."""
        return self.text_embed(self.prompts(classes))

    # ------------------------------------------------------------------ training and zero-shot

    def forward(self, waves: Tensor, lengths: Tensor, emotions: list[str], genders: list[str]) -> dict[str, Tensor]:
        """``waves`` [B, T], ``lengths`` [B], B emotion and B gender strings -> ClapLoss's dict ("loss", ...).

        Each item's text is the prompt of its own emotion; emotion ids are the batch's sorted label names.
        """
        if len(emotions) != waves.shape[0]:
            raise MetalearnError(f"{len(emotions)} emotions, expected {waves.shape[0]} (one per waveform)")
        audio = self.audio_embed(waves, lengths)
        text = self.text_embed(self.prompts(list(emotions)))
        names = sorted(set(emotions))
        ids = torch.tensor([names.index(e) for e in emotions], dtype=torch.long, device=audio.device)
        return self.loss(audio, text, ids, list(genders))

    def zero_shot_logits(self, pooled: Tensor, classes: list[str]) -> Tensor:
        """Pooled audio [N, D], C class names -> audio logit scale x cosine(audio, class prompt) [N, C]."""
        audio = self.project_audio(pooled)
        return logit_scale(self.loss.log_scale_audio) * audio @ self.class_embeddings(classes).T

    # ------------------------------------------------------------------ saving the heads

    def _head_modules(self) -> dict[str, nn.Module]:
        modules: dict[str, nn.Module] = {"audio_projection": self.audio_projection,
                                         "text_projection": self.text_projection, "loss": self.loss}
        if self.cfg.train_text:
            modules["text"] = self.text
        return modules

    def heads_state_dict(self) -> dict[str, Tensor]:
        """Projections, logit scales (and the text encoder when ``train_text``): flat name -> tensor, detached."""
        return {f"{prefix}.{name}": tensor.detach().clone().contiguous()
                for prefix, module in self._head_modules().items()
                for name, tensor in module.state_dict().items()}

    def load_heads(self, state: Mapping[str, Tensor]) -> None:
        """Load a :meth:`heads_state_dict` (keys and shapes must match this model's)."""
        expected = set(self.heads_state_dict())
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise MetalearnError(f"CLAP heads with missing keys {missing[:3]} and unexpected keys {unexpected[:3]}, "
                                 f"expected a state saved with the same ClapConfig")
        for prefix, module in self._head_modules().items():
            part = {k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + ".")}
            try:
                module.load_state_dict(part)
            except RuntimeError as e:
                first = str(e).strip().splitlines()[-1].strip()
                raise MetalearnError(f"CLAP heads {prefix!r} do not fit this model ({first}), "
                                     f"expected a state saved with the same ClapConfig and backbone") from e
