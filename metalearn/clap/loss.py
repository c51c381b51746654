"""GEmo-CLAP contrastive losses (Pan et al., ICASSP 2024), in the manner of open_clip's ``ClipLoss``.

Audio embeddings A [B, E] and text embeddings T [B, E] (both L2-normalised by the caller) give the
logits C_a = s_a A T^T (row i: audio i against every text) and C_t = s_t T A^T (row i: text i against
every audio), with s = min(exp(log_scale), 100) as in CLIP. A target matrix M [B, B] (M[i, j] > 0
when audio i and text j belong together) is turned into distributions and the loss is

    L(M) = 1/2 [KL(rownorm(M) || softmax(C_a)) + KL(rownorm(M^T) || softmax(C_t))],

each KL summed over a row and averaged over rows. The text direction uses M^T: row i of C_t asks
which audios match text i, i.e. column i of M. Label-equality targets are symmetric, so both
directions then share one P; :func:`contrastive_loss` also accepts non-symmetric M.

Variants (:class:`ClapLoss`):

- ``"clip"``: M = I (one positive per row), plain CLIP;
- ``"emo"``: Emo-CLAP, M = M_e, M_e[i, j] = 1 iff utterances i and j share the emotion;
- ``"ml"``: ML-GEmo-CLAP, alpha * L(M_e) + (1 - alpha) * L(M_g);
- ``"sl"``: SL-GEmo-CLAP, L(alpha * M_e + (1 - alpha) * M_g).

Unknown gender rule: M_g[i, j] = 1 iff i == j, or both genders are known and equal. An utterance of
unknown gender matches only itself (its row and column of M_g are the identity's), which keeps
M_g symmetric and every row non-empty. String genders equal to ``unknown`` are unknown; in a tensor
of gender ids, negative ids are unknown.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from metalearn.clap.config import LOSSES
from metalearn.util.errors import MetalearnError

MAX_SCALE = 100.0


def equality_targets(labels: Tensor) -> Tensor:
    """``labels`` [B] (integer) -> float [B, B], 1 where ``labels[i] == labels[j]``, else 0."""
    if labels.dim() != 1:
        raise MetalearnError(f"labels of shape {tuple(labels.shape)}, expected one dimension [B]")
    return (labels[:, None] == labels[None, :]).float()


def gender_targets(genders: Sequence[str] | Tensor, unknown: str = "unknown") -> Tensor:
    """Genders [B] (strings, or integer ids with negatives unknown) -> float [B, B] (see module rule)."""
    if isinstance(genders, Tensor):
        if genders.dim() != 1:
            raise MetalearnError(f"genders of shape {tuple(genders.shape)}, expected one dimension [B]")
        ids = genders.long()
    else:
        names = sorted({g for g in genders if g != unknown})
        ids = torch.tensor([-1 if g == unknown else names.index(g) for g in genders], dtype=torch.long)
    known = ids >= 0
    same = (ids[:, None] == ids[None, :]) & known[:, None] & known[None, :]
    eye = torch.eye(len(ids), dtype=torch.bool, device=ids.device)
    return (same | eye).float()


def soft_targets(m_emotion: Tensor, m_gender: Tensor, alpha: float) -> Tensor:
    """[B, B], [B, B] -> ``alpha * m_emotion + (1 - alpha) * m_gender`` [B, B] (SL-GEmo-CLAP)."""
    _check_alpha(alpha)
    if m_emotion.shape != m_gender.shape:
        raise MetalearnError(f"gender targets of shape {tuple(m_gender.shape)}, expected {tuple(m_emotion.shape)}")
    return alpha * m_emotion + (1.0 - alpha) * m_gender


def row_normalize(m: Tensor) -> Tensor:
    """Non-negative [B, N] -> [B, N] with every row summing to 1; a row without mass is an error."""
    sums = m.sum(dim=1, keepdim=True)
    if bool((m < 0).any()) or bool((sums <= 0).any()):
        raise MetalearnError("targets with a negative entry or an all-zero row, expected non-negative rows with mass")
    return m / sums


def kl_to_targets(logits: Tensor, targets: Tensor) -> Tensor:
    """KL(P || softmax(logits)) per row, averaged over rows; ``logits``, ``targets`` P [B, N] -> scalar.

    ``targets`` must already be row-normalised; 0 * log 0 counts as 0.
    """
    if logits.shape != targets.shape or logits.dim() != 2:
        raise MetalearnError(f"targets of shape {tuple(targets.shape)}, expected logits' [B, N] {tuple(logits.shape)}")
    targets = targets.to(logits.dtype)
    per_row = (torch.xlogy(targets, targets) - targets * torch.log_softmax(logits, dim=1)).sum(dim=1)
    return per_row.mean()


def logit_scale(log_scale: Tensor) -> Tensor:
    """Learnable log-scale (scalar) -> ``min(exp(log_scale), 100)`` (scalar)."""
    return log_scale.exp().clamp(max=MAX_SCALE)


def clap_logits(audio: Tensor, text: Tensor, log_scale_audio: Tensor,
                log_scale_text: Tensor) -> tuple[Tensor, Tensor]:
    """``audio`` A [B, E], ``text`` T [B, E] -> (C_a = s_a A T^T [B, B], C_t = s_t T A^T [B, B])."""
    if audio.dim() != 2 or audio.shape != text.shape:
        raise MetalearnError(f"text embeddings of shape {tuple(text.shape)}, expected audio's [B, E] "
                             f"{tuple(audio.shape)}")
    sims = audio @ text.T
    return logit_scale(log_scale_audio) * sims, logit_scale(log_scale_text) * sims.T


def contrastive_loss(audio: Tensor, text: Tensor, targets: Tensor, log_scale_audio: Tensor,
                     log_scale_text: Tensor) -> Tensor:
    """A [B, E], T [B, E], M [B, B] -> 1/2 [KL(rownorm(M) || sm(C_a)) + KL(rownorm(M^T) || sm(C_t))]."""
    logits_audio, logits_text = clap_logits(audio, text, log_scale_audio, log_scale_text)
    if targets.shape != logits_audio.shape:
        raise MetalearnError(f"targets of shape {tuple(targets.shape)}, expected [B, B] {tuple(logits_audio.shape)}")
    return 0.5 * (kl_to_targets(logits_audio, row_normalize(targets))
                  + kl_to_targets(logits_text, row_normalize(targets.T)))


def _check_alpha(alpha: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise MetalearnError(f"alpha {alpha}, expected a weight in [0, 1]")


class ClapLoss(nn.Module):
    """Emo-CLAP / ML- / SL-GEmo-CLAP / CLIP loss with two learnable log-scales (audio and text direction).

    Args:
        variant: ``"clip"``, ``"emo"``, ``"ml"`` or ``"sl"`` (see the module docstring).
        alpha: emotion weight in [0, 1] for ``"ml"`` and ``"sl"`` (ignored by the others).
        init_scale: initial logit scale s for both directions, in (0, 100].
    """

    def __init__(self, variant: str = "emo", alpha: float = 1.0, init_scale: float = 1 / 0.07) -> None:
        super().__init__()
        if variant not in LOSSES:
            raise MetalearnError(f"unknown CLAP loss variant {variant!r}, expected one of {', '.join(LOSSES)}")
        _check_alpha(alpha)
        if not 0.0 < init_scale <= MAX_SCALE:
            raise MetalearnError(f"init_scale {init_scale}, expected a logit scale in (0, {MAX_SCALE:g}]")
        self.variant = variant
        self.alpha = float(alpha)
        self.log_scale_audio = nn.Parameter(torch.tensor(math.log(init_scale)))
        self.log_scale_text = nn.Parameter(torch.tensor(math.log(init_scale)))

    def forward(self, audio: Tensor, text: Tensor, emotions: Tensor | None = None,
                genders: Sequence[str] | Tensor | None = None) -> dict[str, Tensor]:
        """A [B, E], T [B, E], emotions [B] long, genders [B] -> {"loss", parts..., "scale_audio", "scale_text"}.

        Parts: ``"loss_emotion"`` for ``"emo"`` and ``"ml"``, ``"loss_gender"`` for ``"ml"``. Emotions may be
        None only for ``"clip"``; genders are required by ``"ml"`` and ``"sl"``.
        """
        batch = audio.shape[0]
        scales = (self.log_scale_audio, self.log_scale_text)
        out: dict[str, Tensor] = {}
        if self.variant == "clip":
            eye = torch.eye(batch, dtype=audio.dtype, device=audio.device)
            out["loss"] = contrastive_loss(audio, text, eye, *scales)
        else:
            if emotions is None or emotions.shape != (batch,):
                got = None if emotions is None else tuple(emotions.shape)
                raise MetalearnError(f"emotions of shape {got}, expected [B] = ({batch},) for variant {self.variant!r}")
            m_emotion = equality_targets(emotions).to(audio.device, audio.dtype)
            if self.variant == "emo":
                out["loss"] = out["loss_emotion"] = contrastive_loss(audio, text, m_emotion, *scales)
            else:
                if genders is None or len(genders) != batch:
                    got = None if genders is None else len(genders)
                    raise MetalearnError(f"{got} genders, expected {batch} (one per item) for variant {self.variant!r}")
                m_gender = gender_targets(genders).to(audio.device, audio.dtype)
                if self.variant == "ml":
                    out["loss_emotion"] = contrastive_loss(audio, text, m_emotion, *scales)
                    out["loss_gender"] = contrastive_loss(audio, text, m_gender, *scales)
                    out["loss"] = self.alpha * out["loss_emotion"] + (1.0 - self.alpha) * out["loss_gender"]
                else:
                    out["loss"] = contrastive_loss(audio, text, soft_targets(m_emotion, m_gender, self.alpha), *scales)
        out["scale_audio"] = logit_scale(self.log_scale_audio).detach()
        out["scale_text"] = logit_scale(self.log_scale_text).detach()
        return out
