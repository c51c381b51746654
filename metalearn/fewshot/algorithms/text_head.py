"""Heads that start from class prompts (GEmo-CLAP): zero-shot, and a text-initialised fine-tuned head.

Both take a *prior*: a linear head over the features, weight [D, W] and bias [W]. Over a CLAP variant's
embeddings the prior is the logit scale times the class prompts' text embeddings, bias 0
(:func:`metalearn.clap.variant.prompt_head`), so the prior's logits are the zero-shot logits.
Any affine standardisation of the features is carried into the prior
(:meth:`metalearn.features.featurize.Standardizer.carry_head`), so the
classifier is the same function of the raw features whatever standardisation came before.

- :class:`ZeroShot` scores the queries with the prior alone; the support set is unused (k = 0).
- :class:`TextHead` is :class:`Finetune` (same Adam steps and support standardisation) starting from
  the prior instead of a zero head: with 0 steps it predicts exactly what zero-shot does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from metalearn.features.featurize import reparametrize
from metalearn.fewshot.algorithms.base import AdapterBase, AdapterSpec
from metalearn.fewshot.algorithms.finetune import Finetune, FinetuneConfig
from metalearn.fewshot.algorithms.functional import Params
from metalearn.util.errors import MetalearnError


def _check(prior: Params, dim: int) -> None:
    w, b = prior.get("weight"), prior.get("bias")
    if w is None or b is None or w.dim() != 2 or b.shape != (w.shape[1],) or w.shape[0] != dim:
        raise MetalearnError(f"a prompt prior must be weight [{dim}, W] and bias [W], got "
                             f"{None if w is None else tuple(w.shape)} and {None if b is None else tuple(b.shape)}")


@dataclass(frozen=True)
class ZeroShotConfig:
    """Zero-shot has nothing to set: the prior is the CLAP variant's, and the support set is unused."""


class ZeroShot(AdapterBase):
    """Prediction by the prior alone (nearest class prompt); nothing is learnt from the support set."""

    name = "zeroshot"
    needs_prior = True
    uses_support = False

    @classmethod
    def from_spec(cls, spec: AdapterSpec, cfg: object) -> ZeroShot:
        return cls(spec.dim, spec.prior, spec.device)

    def __init__(self, dim: int, prior: Params, device: str | torch.device = "cpu") -> None:
        _check(prior, dim)
        self.prior = {k: v.to(device) for k, v in prior.items()}

    def predict(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int,
                val_x: Tensor | None = None, val_y: Tensor | None = None) -> Tensor:
        """query_x [E, Q, D] -> logits [E, Q, W] (the support set is ignored)."""
        if ways != self.prior["bias"].shape[0]:
            raise MetalearnError(f"the prompt prior has {self.prior['bias'].shape[0]} classes, episodes have {ways}")
        q = query_x.to(self.prior["weight"].device, self.prior["weight"].dtype)
        return q @ self.prior["weight"] + self.prior["bias"]


class TextHead(Finetune):
    """A linear head initialised from the class prompts, then fine-tuned on the support set."""

    name = "texthead"
    needs_prior = True

    @classmethod
    def from_spec(cls, spec: AdapterSpec, cfg: object) -> TextHead:
        return cls(spec.dim, spec.prior, cfg, spec.seed, spec.device)

    def __init__(self, dim: int, prior: Params, cfg: FinetuneConfig | None = None, seed: int = 0,
                 device: str | torch.device = "cpu") -> None:
        super().__init__(dim, cfg, seed, device)
        _check(prior, dim)
        self.prior = {k: v.to(self.device) for k, v in prior.items()}

    def initial_heads(self, episodes: int, ways: int, mean: Tensor, scale: Tensor, dtype: torch.dtype) -> Params:
        """The prior carried through the support standardisation: weight [E, D, W], bias [E, W]."""
        if ways != self.prior["bias"].shape[0]:
            raise MetalearnError(f"the prompt prior has {self.prior['bias'].shape[0]} classes, episodes have {ways}")
        weight, bias = reparametrize(self.prior["weight"].to(dtype), self.prior["bias"].to(dtype),
                                     mean.squeeze(1), scale.squeeze(1))  # [E, D, W], [E, W]
        return {"weight": weight.expand(episodes, -1, -1).contiguous(), "bias": bias.expand(episodes, -1).contiguous()}
