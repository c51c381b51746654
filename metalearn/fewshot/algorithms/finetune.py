"""Plain fine-tuning: a fresh head per episode, trained by full-batch Adam on the support embeddings.

The head (``FinetuneConfig.head``) is linear, or the MLP that MAML and ANIL adapt (``mlp_hidden``; its
initialisation drawn from the method's seed, the same for every episode), so capacity can be matched.

Two paths with the same math:
- ``fit_heads``: every episode at once; a linear head by :func:`.finetune_fast.fit_linear_heads` (closed-form
  gradients as batched products, one fused Adam kernel, episodes in cache-sized chunks, validation logits of
  all checkpoints at once), an MLP head by ``torch.func.vmap(torch.func.grad(loss))`` over episode-stacked
  heads and ``functional.batched_adam_step`` (no Python loop over episodes);
- ``fit_heads_loop`` (``FinetuneConfig.vectorized = False``): the readable per-episode loop with ``nn.Linear``
  and ``torch.optim.Adam``, which the tests and ``experiments/bench_trials.py`` compare the fast path against.

Feature standardisation (``standardize``) uses the episode's support set only, so query items never
influence each other: ``global`` centres every dimension on the support mean and divides by one number, the
support's root-mean-square deviation (robust when S is small); ``per_dim`` divides each dimension by its own
support standard deviation, floored at 0.1 x that global scale (with two support items a raw per-dimension
z-score would turn every feature into +-1); ``none`` keeps the raw embeddings.

Model selection (Paper A): given validation data, the validation macro-F1 is measured every ``eval_every``
steps and after the last one; each episode returns the query logits of its best checkpoint (ties: the
earliest). Episodes with no real validation row return the final logits.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import grad, vmap

from metalearn.fewshot.algorithms.base import AdapterBase, TaskSampler
from metalearn.fewshot.algorithms.finetune_config import (  # the config and the space live beside each other
    HEADS,
    STANDARDIZE,
    FinetuneConfig,
    is_checkpoint,
    search_space,  # noqa: F401 (the registry reads it here)
)
from metalearn.fewshot.algorithms.finetune_fast import FitInputs, fit_linear_heads
from metalearn.fewshot.algorithms.functional import (
    AdamSettings,
    Params,
    adam_init,
    batched_adam_step,
    cross_entropy,
    linear_logits,
)
from metalearn.fewshot.algorithms.heads import head_forward, init_head, layer_indices
from metalearn.fewshot.algorithms.rows import RowIndex, dense
from metalearn.util.devices import resolve_device
from metalearn.util.errors import MetalearnError
from metalearn.util.metrics import macro_f1

STANDARDIZE_FLOATS = 1 << 18  # support floats per chunk of support_standardizer (1 MiB)
Forward = Callable[[Params, Tensor], Tensor]  # one episode's head: (params, x [N, D]) -> logits [N, W]


@dataclass
class FitResult:
    params: Params  # final heads: weight [E, D, W], bias [E, W]
    logits: Tensor  # [E, Q, W] query logits of the selected (or final) checkpoint
    best_step: Tensor  # [E] long, the step whose logits were returned


def support_standardizer(support_x: Tensor, support_y: Tensor, mode: str) -> tuple[Tensor, Tensor]:
    """(mean [E, 1, D], scale [E, 1, D]) of the real support rows, for ``(x - mean) / scale``.

    Computed a cache-sized chunk of episodes at a time (its temporaries are the support's size: whole-batch
    ones cost more in page faults than in arithmetic); each episode's numbers do not depend on the chunk."""
    if mode not in STANDARDIZE:
        raise MetalearnError(f"standardize {mode!r}: expected one of {', '.join(STANDARDIZE)}")
    if mode == "none":
        return torch.zeros_like(support_x[:, :1]), torch.ones_like(support_x[:, :1])
    size = max(1, STANDARDIZE_FLOATS // max(support_x[0].numel(), 1))
    if support_x.shape[0] > size:
        parts = [support_standardizer(support_x[i:i + size], support_y[i:i + size], mode)
                 for i in range(0, support_x.shape[0], size)]
        return torch.cat([m for m, _ in parts]), torch.cat([s for _, s in parts])
    keep = support_y >= 0
    real = keep.to(support_x.dtype).unsqueeze(-1)  # [E, S, 1]
    n = real.sum(1, keepdim=True).clamp_min(1)
    padded = not bool(keep.all())  # without padding, times 1 changes no bit: two passes fewer
    mean = (support_x * real if padded else support_x).sum(1, keepdim=True) / n
    spread = (support_x - mean).square_()
    var = (spread.mul_(real) if padded else spread).sum(1, keepdim=True) / n  # [E, 1, D]
    rms = var.mean(-1, keepdim=True).sqrt().clamp_min(1e-6)  # [E, 1, 1]
    if mode == "global":
        return mean, rms.expand_as(mean)
    return mean, torch.maximum(var.sqrt(), 0.1 * rms)


def init_heads(episodes: int, dim: int, ways: int, std: float, seed: int, dtype: torch.dtype,
               device: torch.device) -> Params:
    """Episode-stacked heads: weight [E, D, W] (zeros, or N(0, std^2) drawn on CPU from ``seed``), bias [E, W]."""
    weight = torch.zeros(episodes, dim, ways, dtype=dtype)
    if std > 0:
        gen = torch.Generator().manual_seed(seed)
        weight = torch.randn(episodes, dim, ways, generator=gen, dtype=dtype) * std
    return {"weight": weight.to(device), "bias": torch.zeros(episodes, ways, dtype=dtype, device=device)}


def forward_of(params: Params) -> Forward:
    """The head function of ``params``: ``linear_logits`` for {weight, bias}, else the MLP ``head_forward``."""
    return linear_logits if "weight" in params else head_forward


@functools.cache
def _batched_grad(forward: Forward) -> Callable[[Params, Tensor, Tensor], Params]:
    """Per-episode gradients of the support loss: (params [E, ...], x [E, S, D], y [E, S]) -> grads [E, ...]."""
    return vmap(grad(lambda params, x, y: cross_entropy(forward(params, x), y)))


@functools.cache
def _batched(forward: Forward) -> Callable[[Params, Tensor], Tensor]:
    """``forward`` over episode-stacked heads: (params [E, ...], x [E, N, D]) -> logits [E, N, W]."""
    return vmap(forward)


def fit_heads(rows: FitInputs, ways: int, cfg: FinetuneConfig, init: Params) -> FitResult:
    """Train E heads at once on ``rows``: support_x [E, S, D], support_y [E, S], query_x [E, Q, D], val [E, V, D],
    [E, V].

    ``init``: episode-stacked heads, linear ({weight [E, D, W], bias [E, W]}: :func:`.fit_linear_heads`) or an
    MLP ({w0, b0, ...}, [E, ...]: :func:`fit_heads_autograd`).
    """
    if "weight" in init:
        return FitResult(*fit_linear_heads(rows, ways, cfg, init))
    return fit_heads_autograd(rows, ways, cfg, init)


def fit_heads_autograd(rows: FitInputs, ways: int, cfg: FinetuneConfig, init: Params) -> FitResult:
    """``fit_heads`` for any head by ``vmap(grad(loss))`` and the batched Adam step (shapes as there)."""
    support_x, support_y, query_x, val_x, val_y = rows.support_x, rows.support_y, rows.query_x, rows.val_x, rows.val_y
    heads = _batched(forward_of(init))
    params = {k: v.clone() for k, v in init.items()}  # the Adam step updates in place
    state = adam_init(params)
    adam = AdamSettings(cfg.lr, (cfg.beta1, cfg.beta2), cfg.eps, cfg.weight_decay)
    episodes = support_x.shape[0]
    best_f1 = torch.full((episodes,), -math.inf, device=support_x.device)
    best_logits = torch.zeros(*query_x.shape[:2], ways, dtype=query_x.dtype, device=query_x.device)
    best_step = torch.zeros(episodes, dtype=torch.long, device=support_x.device)
    for step in range(1, cfg.steps + 1):
        grads = _batched_grad(forward_of(init))(params, support_x, support_y)
        params, state = batched_adam_step(params, grads, state, adam, step)
        if val_x is not None and val_y is not None and is_checkpoint(step, cfg):
            f1 = macro_f1(heads(params, val_x).argmax(-1), val_y, None, ways).nan_to_num(nan=-math.inf)
            better = f1 > best_f1
            best_logits = torch.where(better[:, None, None], heads(params, query_x), best_logits)
            best_step = torch.where(better, step, best_step)
            best_f1 = torch.where(better, f1, best_f1)
    final = heads(params, query_x)
    unselected = best_step == 0
    logits = torch.where(unselected[:, None, None], final, best_logits)
    return FitResult(params, logits, torch.where(unselected, cfg.steps, best_step))


def fit_heads_loop(rows: FitInputs, ways: int, cfg: FinetuneConfig, init: Params) -> FitResult:
    """The same as ``fit_heads``, one episode at a time with nn.Linear (nn.Sequential) and torch.optim.Adam."""
    support_x, support_y, query_x, val_x, val_y = rows.support_x, rows.support_y, rows.query_x, rows.val_x, rows.val_y
    finals, logits, steps = [], [], []
    for e in range(support_x.shape[0]):
        head = reference_head({k: v[e] for k, v in init.items()})
        real = support_y[e] >= 0
        val = None if val_x is None or val_y is None else (val_x[e:e + 1], val_y[e:e + 1])
        inputs = EpisodeInputs(support_x[e][real], support_y[e][real], query_x[e], val)
        chosen, chosen_step = train_selected(head, [{"params": list(head.parameters())}], inputs, ways, cfg)
        logits.append(chosen)
        finals.append(head_params(head, linear="weight" in init))
        steps.append(chosen_step)
    params = {k: torch.stack([p[k] for p in finals]) for k in init}
    return FitResult(params, torch.stack(logits), torch.tensor(steps, device=support_x.device))


@dataclass(frozen=True)
class EpisodeInputs:
    """One episode as :func:`train_selected` reads it, in whatever form its model takes (rows, clip keys):
    the support and its labels support_y [S], the query, and for model selection ``val`` = (inputs, labels
    [..., V], -1 = padding) or None."""

    support: Any
    support_y: Tensor
    query: Any
    val: tuple[Any, Tensor] | None = None


def train_selected(model: Callable[[Any], Tensor], groups: list[dict], inputs: EpisodeInputs, ways: int,
                   cfg: FinetuneConfig) -> tuple[Tensor, int]:
    """Fine-tuning's training and model selection for one episode, whatever ``model`` reads.

    ``model(x)`` gives logits [..., N, W] of the episode's inputs (support, query, validation); ``groups`` are
    its trainable parameters as ``torch.optim.Adam`` parameter groups (a group's own ``lr`` wins over ``cfg.lr``).
    ``cfg.steps`` full-batch Adam steps (``cfg``'s betas, eps, weight decay) on the support loss; given
    validation inputs, the validation macro-F1 every ``eval_every`` steps and after the last; returns the query
    logits [Q, W] of the best checkpoint (ties: the earliest; NaN never wins) and its step, else the final logits
    and ``cfg.steps``. ``model`` keeps its final parameters.
    """
    support, support_y, query, val = inputs.support, inputs.support_y, inputs.query, inputs.val
    opt = torch.optim.Adam(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                           weight_decay=cfg.weight_decay)
    best_f1, chosen, chosen_step = -math.inf, None, cfg.steps
    for step in range(1, cfg.steps + 1):
        opt.zero_grad()
        nn.functional.cross_entropy(model(support), support_y).backward()
        opt.step()
        if val is not None and is_checkpoint(step, cfg):
            with torch.no_grad():
                pred = model(val[0]).argmax(-1)
                f1 = macro_f1(pred.reshape(1, -1), val[1].reshape(1, -1), None, ways).item()
                if f1 > best_f1:  # NaN (no real validation row) never wins
                    best_f1, chosen, chosen_step = f1, model(query), step
    with torch.no_grad():
        return (chosen if chosen is not None else model(query)), chosen_step


def reference_head(params: Params) -> nn.Module:
    """One episode's head as torch modules holding copies of ``params`` (linear: weight [D, W]; MLP: w{i} [out, in])."""
    if "weight" in params:
        pairs = [(params["weight"].T, params["bias"])]
    else:
        pairs = [(params[f"w{i}"], params[f"b{i}"]) for i in layer_indices(params)]
    layers: list[nn.Module] = []
    for n, (w, b) in enumerate(pairs):
        layer = nn.Linear(w.shape[1], w.shape[0], dtype=w.dtype, device=w.device)
        with torch.no_grad():
            layer.weight.copy_(w)
            layer.bias.copy_(b)
        layers += [layer] + ([nn.ReLU()] if n < len(pairs) - 1 else [])
    return layers[0] if len(layers) == 1 else nn.Sequential(*layers)


def head_params(head: nn.Module, linear: bool) -> Params:
    """The parameters of a :func:`reference_head` back in the functional layout (detached)."""
    if linear:
        return {"weight": head.weight.detach().T, "bias": head.bias.detach()}
    layers = [m for m in (head if isinstance(head, nn.Sequential) else [head]) if isinstance(m, nn.Linear)]
    return {f"{k}{i}": getattr(m, name).detach() for i, m in enumerate(layers) for k, name in (("w", "weight"),
                                                                                             ("b", "bias"))}


class Finetune(AdapterBase):
    """A head (linear or MLP) fine-tuned from scratch on each episode's support embeddings; nothing is meta-learned."""

    name = "finetune"
    meta_learns = False

    def __init__(self, dim: int, cfg: FinetuneConfig | None = None, seed: int = 0,
                 device: str | torch.device = "cpu") -> None:
        self.dim, self.cfg, self.seed = dim, cfg or FinetuneConfig(), seed
        self.device = resolve_device(device) if isinstance(device, str) else device
        if self.cfg.standardize not in STANDARDIZE:
            raise MetalearnError(f"standardize {self.cfg.standardize!r}: expected one of {', '.join(STANDARDIZE)}")
        if self.cfg.head not in HEADS or (self.needs_prior and self.cfg.head != "linear"):
            raise MetalearnError(f"{self.name}: head {self.cfg.head!r}: expected one of {', '.join(HEADS)}"
                                 + (" (a prompt prior is a linear head)" if self.needs_prior else ""))

    @property
    def reads_rows(self) -> bool:
        """The linear fast path gathers validation and query rows itself, a cache-sized chunk at a time."""
        return self.cfg.vectorized and self.cfg.head == "linear"

    def meta_train(self, sampler: TaskSampler, steps: int) -> None:
        """Nothing to learn across speakers."""

    def fit(self, support_x: Tensor, support_y: Tensor, query_x: Tensor | RowIndex, ways: int,
            val_x: Tensor | RowIndex | None = None, val_y: Tensor | None = None) -> FitResult:
        """Standardise on the support set, then train the heads (shapes as in ``predict``; query_x and val_x
        may be :class:`RowIndex` es)."""
        sx, sy, qx = support_x.to(self.device), support_y.to(self.device), query_x.to(self.device)
        mean, scale = support_standardizer(sx, sy, self.cfg.standardize)
        init = self.initial_heads(sx.shape[0], ways, mean, scale, sx.dtype)
        if self.cfg.vectorized and "weight" in init:  # standardised a chunk at a time, in cache
            val = (None, None) if val_x is None or val_y is None else (val_x.to(self.device), val_y.to(self.device))
            return FitResult(*fit_linear_heads(FitInputs(sx, sy, qx, *val), ways, self.cfg, init, (mean, scale)))
        qx, val_x = dense(qx), dense(val_x)
        vx = None if val_x is None else (val_x.to(self.device) - mean) / scale
        vy = None if val_y is None else val_y.to(self.device)
        fit = fit_heads if self.cfg.vectorized else fit_heads_loop
        return fit(FitInputs((sx - mean) / scale, sy, (qx - mean) / scale, vx, vy), ways, self.cfg, init)

    def initial_heads(self, episodes: int, ways: int, mean: Tensor, scale: Tensor, dtype: torch.dtype) -> Params:
        """The heads training starts from, over standardised features ``(x - mean) / scale`` ([E, 1, D] each):
        linear: zero (or N(0, init_std^2)) weight [E, D, W] and zero bias [E, W]; mlp: one ``init_head`` draw
        from the method's seed, the same for every episode ({w0, b0, ...}, [E, ...])."""
        if self.cfg.head == "mlp":
            head = init_head([self.dim, *self.cfg.mlp_hidden], ways, self.seed, self.device, dtype)
            return {k: v.expand(episodes, *v.shape).contiguous() for k, v in head.items()}
        return init_heads(episodes, self.dim, ways, self.cfg.init_std, self.seed, dtype, self.device)

    def predict(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int,
                val_x: Tensor | None = None, val_y: Tensor | None = None) -> Tensor:
        """support_x [E, S, D], support_y [E, S], query_x [E, Q, D], val [E, V, D]/[E, V] -> logits [E, Q, W]."""
        return self.fit(support_x, support_y, query_x, ways, val_x, val_y).logits
