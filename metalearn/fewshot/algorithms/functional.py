"""Small functions (pure, but for the Adam step) the adaptation methods are built from: prototypes, logits, losses.

Shapes: E episodes, S support items, Q query items, D embedding size, W ways. Labels are ints in 0..W-1;
a label < 0 marks a padded row, which every function here ignores. Every function works on a single
episode too (drop the leading E), so it can run under ``torch.func.vmap``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.optim.adam import adam as adam_functional

Params = dict[str, Tensor]
AdamState = dict[str, Params]


@dataclass(frozen=True)
class AdamSettings:
    """``torch.optim.Adam``'s settings: ``lr``, ``betas``, ``eps`` and ``weight_decay`` (L2 added to the gradient,
    not AdamW)."""

    lr: float
    betas: tuple[float, float]
    eps: float
    weight_decay: float = 0.0


def masked_one_hot(y: Tensor, ways: int, dtype: torch.dtype) -> Tensor:
    """[..., N] labels -> [..., N, W] one-hot rows, all-zero rows where the label is < 0 (padding)."""
    oh = torch.nn.functional.one_hot(y.clamp_min(0).long(), ways).to(dtype)
    return oh * (y >= 0).unsqueeze(-1).to(dtype)


def prototypes(support_x: Tensor, support_y: Tensor, ways: int) -> Tensor:
    """Class means of the support embeddings.

    Args:
        support_x: [E, S, D]; support_y: [E, S] (padding < 0 ignored).
    Returns:
        [E, W, D]; a class with no support item gets the zero vector.
    """
    oh = masked_one_hot(support_y, ways, support_x.dtype)  # [E, S, W]
    counts = oh.sum(-2).clamp_min(1).unsqueeze(-1)  # [E, W, 1]
    return torch.einsum("...sw,...sd->...wd", oh, support_x) / counts


def squared_euclidean_logits(query: Tensor, protos: Tensor) -> Tensor:
    """Negative squared Euclidean distances, query [E, Q, D] x protos [E, W, D] -> [E, Q, W]."""
    q2 = (query * query).sum(-1, keepdim=True)  # [E, Q, 1]
    p2 = (protos * protos).sum(-1).unsqueeze(-2)  # [E, 1, W]
    cross = query @ protos.transpose(-1, -2)  # [E, Q, W]
    return -(q2 - 2 * cross + p2).clamp_min(0)


def cosine_logits(query: Tensor, protos: Tensor, scale: float = 1.0, eps: float = 1e-8) -> Tensor:
    """``scale`` x cosine similarity, query [E, Q, D] x protos [E, W, D] -> [E, Q, W]."""
    qn = query / query.norm(dim=-1, keepdim=True).clamp_min(eps)
    pn = protos / protos.norm(dim=-1, keepdim=True).clamp_min(eps)
    return scale * (qn @ pn.transpose(-1, -2))


def linear_logits(params: Params, x: Tensor) -> Tensor:
    """A linear head: x [E, N, D] @ params["weight"] [E, D, W] + params["bias"] [E, W] -> [E, N, W]."""
    return x @ params["weight"] + params["bias"].unsqueeze(-2)


def cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """Mean cross-entropy over the real rows of each episode.

    Args:
        logits: [E, N, W]; y: [E, N] (padding < 0 ignored).
    Returns:
        [E] (a scalar for a single episode [N, W]); 0 for an episode with no real row.
    """
    logp = torch.log_softmax(logits, dim=-1)
    nll = -torch.gather(logp, -1, y.clamp_min(0).long().unsqueeze(-1)).squeeze(-1)  # [E, N]
    real = (y >= 0).to(logits.dtype)
    return (nll * real).sum(-1) / real.sum(-1).clamp_min(1)


def prototypical_loss(support_z: Tensor, support_y: Tensor, query_z: Tensor, query_y: Tensor, ways: int) -> Tensor:
    """Snell et al.'s loss: cross-entropy of the query over negative squared distances to the prototypes.

    Args:
        support_z: [E, S, D], support_y: [E, S], query_z: [E, Q, D], query_y: [E, Q].
    Returns:
        scalar, the mean over episodes of each episode's mean query loss.
    """
    logits = squared_euclidean_logits(query_z, prototypes(support_z, support_y, ways))
    return cross_entropy(logits, query_y).mean()


def adam_init(params: Params) -> AdamState:
    """Zero first and second moments shaped like ``params``."""
    return {
        "exp_avg": {k: torch.zeros_like(v) for k, v in params.items()},
        "exp_avg_sq": {k: torch.zeros_like(v) for k, v in params.items()},
    }


@torch.no_grad()
def batched_adam_step(params: Params, grads: Params, state: AdamState, adam: AdamSettings,
                      step: int) -> tuple[Params, AdamState]:
    """One Adam update, ``torch.optim.Adam``'s math (``adam.weight_decay`` is L2 added to the gradient, not AdamW),
    by its fused kernel (``torch.optim.adam.adam(fused=True)``: one pass over each tensor instead of six; the
    same numbers as the single-tensor path in float64).

    Adam is element-wise, so the tensors may carry any leading dims (here: one head per episode, [E, ...]).
    ``step`` counts from 1; ``params`` are contiguous, ``grads`` laid out in any way. The one impure function
    here: like torch.optim it updates ``params`` and ``state`` in place (and returns them), because fresh buffers
    for every operation doubled the time of a step on CPU; pass clones to keep the originals.
    """
    keys = list(params)
    steps = [torch.tensor(float(step - 1), device=params[k].device) for k in keys]  # the kernel adds 1
    # the kernel pairs elements by memory order: a gradient laid out otherwise (a transposed weight's) is copied
    laid = [grads[k] if grads[k].stride() == params[k].stride() else grads[k].contiguous() for k in keys]
    adam_functional([params[k] for k in keys], laid, [state["exp_avg"][k] for k in keys],
                    [state["exp_avg_sq"][k] for k in keys], [], steps, fused=True, amsgrad=False,
                    beta1=adam.betas[0], beta2=adam.betas[1], lr=adam.lr, weight_decay=adam.weight_decay, eps=adam.eps,
                    maximize=False)
    return params, state
