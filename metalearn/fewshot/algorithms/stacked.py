"""Episode-stacked MLP heads: the inner loops of MAML, FOMAML, ANIL, Meta-SGD and Reptile without vmap.

Shapes: E episodes, S support rows, N rows to score, D input size, H first hidden size, W ways. A head's
parameters are ``{"w{i}": [out, in], "b{i}": [out]}`` (see :mod:`heads`); stacked, each gets a leading E.

Three things make the inner loop cheap, all exact:

- **Stacked parameters, hand-written gradients.** Every episode's head lives in one [E, ...] tensor and the
  gradient of the per-episode mean cross-entropy is written out (``ce_grad``, ``mlp_backward``: softmax minus
  one-hot, then the chain rule through the layers) as ordinary differentiable tensor ops. No vmap, no
  ``autograd.grad`` per inner step; second order is autograd once through these ops (ReLU's mask is a
  constant, as in autograd's own double backward).
- **The first layer in low-rank form.** With one scalar step size, SGD on the first layer moves it by
  ``-lr * G^T X`` per step (G = dL/dz [S, H], X the support rows [S, D]), so after t steps
  ``W' = W - lr * A^T X``, ``b' = b - lr * 1^T A`` with ``A = sum of the G`` [S, H]. Rows ``x`` then score
  ``x W'^T + b' = x W^T + b - lr * (x X^T + 1) A``: the adapted [H, D] first layer of each episode is never
  formed; what remains per step is [S, S] and [S, H] work, and ``x W^T`` is one large matrix product over all
  episodes. Meta-SGD's per-entry rates break the identity, so its first layer stays dense.
- **First order without a graph.** FOMAML's inner loop runs on detached values; only the query pass is
  differentiable (``adapted = init - lr * stopgrad(sum of gradients)``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from metalearn.fewshot.algorithms.functional import (
    AdamSettings,
    AdamState,
    Params,
    adam_init,
    batched_adam_step,
    masked_one_hot,
)
from metalearn.fewshot.algorithms.heads import layer_indices

InnerLR = float | dict[str, Tensor]  # one step size, or Meta-SGD's per-entry rates shaped like the parameters
Layer = tuple[Tensor, Tensor]  # (weight [E, out, in] or [out, in], bias [E, out] or [out])


def ce_target(y: Tensor, ways: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """What the cross-entropy gradient needs of labels y [E, N] (< 0 = padding), once per inner loop:
    the row weights 1 / (real rows of the episode) [E, N, 1] (0 on padding) and the weighted one-hot [E, N, W]."""
    real = (y >= 0).to(dtype)
    weight = (real / real.sum(-1, keepdim=True).clamp_min(1)).unsqueeze(-1)
    return weight, masked_one_hot(y, ways, dtype) * weight


def ce_grad(logits: Tensor, y: Tensor, target: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """d(per-episode mean cross-entropy)/d(logits): logits [E, N, W], y [E, N] (< 0 = padding) -> [E, N, W].

    ``target``: ``ce_target(y, W, logits.dtype)``, when already computed."""
    weight, onehot = target if target is not None else ce_target(y, logits.shape[-1], logits.dtype)
    return logits.softmax(-1) * weight - onehot


def _linear(h: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """h [E, N, in] through w [E, out, in] (or shared [out, in]) and b -> [E, N, out]."""
    if w.dim() == 2:
        return F.linear(h, w, b)
    return torch.baddbmm(b.unsqueeze(-2), h, w.transpose(-1, -2))


def mlp_forward(layers: list[Layer], h: Tensor, relu_first: bool) -> tuple[Tensor, list[Tensor]]:
    """Logits [E, N, W] and each layer's input; ReLU between layers (and before the first if ``relu_first``)."""
    inputs = []
    for i, (w, b) in enumerate(layers):
        if i or relu_first:
            h = h.relu()
        inputs.append(h)
        h = _linear(h, w, b)
    return h, inputs


def forward(params: Params, x: Tensor) -> Tensor:
    """Logits [E, N, W] of rows x [E, N, D] through stacked head parameters ``{"w{i}": [E, out, in], ...}``."""
    layers = [(params[f"w{i}"], params[f"b{i}"]) for i in layer_indices(params)]
    return mlp_forward(layers, x, relu_first=False)[0]


def mlp_backward(layers: list[Layer], inputs: list[Tensor], dz: Tensor, relu_first: bool
                 ) -> tuple[list[Layer], Tensor | None]:
    """Per-episode gradients [(dW [E, out, in], db [E, out])] from dz = d(loss)/d(logits) [E, N, W];
    with ``relu_first`` also d(loss)/d(the pre-activation fed to the first layer) [E, N, in], else None."""
    grads: list[Layer] = []
    for i in reversed(range(len(layers))):
        h = inputs[i]
        grads.append((dz.transpose(-1, -2) @ h, dz.sum(-2)))
        dz = (dz @ layers[i][0]) * (h > 0) if i or relu_first else None
    return grads[::-1], dz


def _lr(lr: InnerLR, key: str) -> float | Tensor:
    return lr[key] if isinstance(lr, dict) else lr


@dataclasses.dataclass(frozen=True)
class FastHead:
    """E adapted heads: ``init - lr * sums`` per dense layer; the first layer in low-rank form when ``support``.

    init: the adapting layers' initial parameters (unbatched); support: the [E, S, D] rows a low-rank first
    layer adapts on, coef: its A [E, S, H] (None before the first step; both None when every layer is dense);
    sums: the dense layers' summed gradients [E, ...] (empty before the first step); episodes: E.
    """

    init: Params
    lr: InnerLR
    support: Tensor | None
    coef: Tensor | None
    sums: Params
    episodes: int

    def layers(self) -> list[Layer]:
        """The dense layers' adapted (weight, bias): [E, ...] after a step, the shared init before."""
        return _dense(self.init, self.lr, self.sums, layer_indices(self.init)[0 if self.support is None else 1:])

    def project(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """What the low-rank first layer needs of rows x [E, N, D], the same after every step:
        (x W^T + b [E, N, H] with the initial W, b; ``gram(x, support)`` [E, N, S])."""
        i = layer_indices(self.init)[0]
        return F.linear(x, self.init[f"w{i}"], self.init[f"b{i}"]), gram(x, self.support)

    def logits(self, x: Tensor, projected: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Logits [E, N, W] of rows x [E, N, D] (``projected``: ``self.project(x)`` of any head of this path)."""
        layers = self.layers()
        if self.support is None:
            return mlp_forward(layers, x, relu_first=False)[0]
        z, k = projected if projected is not None else self.project(x)
        if self.coef is not None:
            z = torch.baddbmm(z, k, self.coef, alpha=-_lr(self.lr, f"w{layer_indices(self.init)[0]}"))
        return mlp_forward(layers, z, relu_first=True)[0] if layers else z

    def dense(self) -> Params:
        """Every adapted parameter stacked [E, ...], a low-rank first layer formed explicitly (for tests)."""
        ids, e, out = layer_indices(self.init), self.episodes, {}
        if self.support is not None:
            i = ids.pop(0)
            lr = _lr(self.lr, f"w{i}")
            w, b = self.init[f"w{i}"].expand(e, -1, -1), self.init[f"b{i}"].expand(e, -1)
            if self.coef is not None:
                w, b = w - lr * self.coef.transpose(-1, -2) @ self.support, b - lr * self.coef.sum(-2)
            out[f"w{i}"], out[f"b{i}"] = w, b
        for i, (w, b) in zip(ids, self.layers(), strict=True):
            out[f"w{i}"], out[f"b{i}"] = w.expand(e, *w.shape[-2:]), b.expand(e, *b.shape[-1:])
        return out


def gram(x: Tensor, support: Tensor) -> Tensor:
    """x [E, N, D] against the support rows [E, S, D]: ``x X^T + 1`` [E, N, S] (the 1 is the bias's input)."""
    return torch.baddbmm(x.new_ones(()), x, support.transpose(-1, -2))


def path_logits(path: Iterator[FastHead], x: Tensor, every: bool) -> Tensor:
    """Logits of rows x [E, N, D] after each head of ``path``: [E, T + 1, N, W] (``every``), else the last's
    [E, N, W]. The low-rank first layer projects x once for the whole path."""
    head = next(path)
    projected = head.project(x) if head.support is not None else None
    if every:
        return torch.stack([head.logits(x, projected)] + [h.logits(x, projected) for h in path], dim=1)
    for head in path:  # noqa: B007 - only the last head scores
        pass
    return head.logits(x, projected)


def low_rank(init: Params, lr: InnerLR) -> bool:
    """Whether the first layer can stay in low-rank form: it adapts with one scalar step size."""
    return not isinstance(_lr(lr, f"w{layer_indices(init)[0]}"), Tensor)


def _dense(init: Params, lr: InnerLR, sums: Params, ids: list[int]) -> list[Layer]:
    """Layers ``ids`` adapted: ``init - lr * sums`` (the shared init where no gradient was summed yet)."""
    def one(key: str) -> Tensor:
        return init[key] if key not in sums else init[key] - _lr(lr, key) * sums[key]
    return [(one(f"w{i}"), one(f"b{i}")) for i in ids]


def sgd_path(init: Params, sx: Tensor, sy: Tensor, steps: int, lr: InnerLR, first_order: bool = False
             ) -> Iterator[FastHead]:
    """The heads after 0, 1, ..., ``steps`` SGD steps on each episode's support cross-entropy.

    Args:
        init: the adapting layers (unbatched; differentiable: the meta-parameters); sx [E, S, D] their input
            rows, sy [E, S] (< 0 = padding); lr: a scalar, or per-key tensors (Meta-SGD).
        first_order: the inner gradients are constants (the loop runs on detached values).
    Yields:
        ``FastHead`` s, differentiable w.r.t. ``init``, ``lr`` and (second order) ``sx``.
    """
    e, lowrank, ids = sx.shape[0], low_rank(init, lr), layer_indices(init)
    support = (sx.detach() if first_order else sx) if lowrank else None
    head = FastHead(init, lr, support, None, {}, e)
    yield head
    if first_order:  # the loop runs on constants; the yielded heads keep the differentiable init and lr
        init = {k: v.detach() for k, v in init.items()}
        lr = {k: v.detach() for k, v in lr.items()} if isinstance(lr, dict) else lr
        sx = sx.detach()
    dense_ids = ids[1:] if lowrank else ids
    if lowrank:
        ps, ks, lr0 = F.linear(sx, init[f"w{ids[0]}"], init[f"b{ids[0]}"]), gram(sx, sx), _lr(lr, f"w{ids[0]}")
    coef, sums, target = None, {}, None
    for _ in range(steps):
        layers = _dense(init, lr, sums, dense_ids)
        if lowrank:
            z = ps if coef is None else torch.baddbmm(ps, ks, coef, alpha=-lr0)
            logits, inputs = mlp_forward(layers, z, relu_first=True) if layers else (z, [])
        else:
            logits, inputs = mlp_forward(layers, sx, relu_first=False)
        target = target or ce_target(sy, logits.shape[-1], logits.dtype)
        dz = ce_grad(logits, sy, target)
        grads, dfirst = mlp_backward(layers, inputs, dz, relu_first=lowrank)
        if lowrank:
            g0 = dfirst if layers else dz
            coef = g0 if coef is None else coef + g0
        for i, (gw, gb) in zip(dense_ids, grads, strict=True):
            for key, g in ((f"w{i}", gw), (f"b{i}", gb)):
                sums[key] = g if key not in sums else sums[key] + g
        head = dataclasses.replace(head, coef=coef, sums=dict(sums))
        yield head


Adam = tuple[tuple[float, float], float]  # (betas, eps)


@torch.no_grad()
def finetune(init: Params, x: Tensor, y: Tensor, steps: int, lr: float, adam: Adam | None = None,
             rows: Tensor | None = None) -> tuple[Params, Tensor | None]:
    """``steps`` full-batch steps of SGD (``adam`` None) or Adam per episode, every head from ``init``.

    Args:
        init: unbatched head parameters; x [E, N, D], y [E, N] (< 0 = padding): each episode's training rows.
        adam: (betas, eps) of ``torch.optim.Adam`` (the update is :func:`functional.batched_adam_step`).
        rows: [E, M, D] rows to score after each of 0..steps steps.
    Returns:
        the stacked parameters [E, ...] after the last step, and the logits of ``rows`` [E, T + 1, M, W] (or None).
    """
    params = {k: v.expand(x.shape[0], *v.shape).clone() for k, v in init.items()}
    state: AdamState | None = adam_init(params) if adam is not None else None
    ids, scores, target = layer_indices(init), [], None
    for step in range(1, steps + 2):
        layers = [(params[f"w{i}"], params[f"b{i}"]) for i in ids]
        if rows is not None:
            scores.append(mlp_forward(layers, rows, relu_first=False)[0])
        if step > steps:
            break
        logits, inputs = mlp_forward(layers, x, relu_first=False)
        target = target or ce_target(y, logits.shape[-1], logits.dtype)
        grads, _ = mlp_backward(layers, inputs, ce_grad(logits, y, target), relu_first=False)
        flat = {f"{p}{i}": g for i, pair in zip(ids, grads, strict=True) for p, g in zip("wb", pair, strict=True)}
        if state is None:
            for k, p in params.items():
                p.add_(flat[k], alpha=-lr)
        else:
            batched_adam_step(params, flat, state, AdamSettings(lr, adam[0], adam[1]), step)
    return params, (torch.stack(scores, dim=1) if rows is not None else None)
