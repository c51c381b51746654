"""A functional MLP head (parameters in a plain dict), its body / last-layer split for ANIL, and the
per-episode choice of the number of adaptation steps by validation macro-F1 that every head adapter shares.

Keys are ``w0, b0, w1, b1, ...``: layer i maps ``w{i}.shape[1] -> w{i}.shape[0]``. ``head_forward`` applies
the layers present in index order with a ReLU between consecutive layers, never after the last one, so
``head_forward(p, x) == head_forward(last_params(p), body_forward(body_params(p), x))``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import vmap

from metalearn.fewshot.algorithms.functional import Params
from metalearn.util import metrics
from metalearn.util.errors import MetalearnError

# trajectory(support_x [S, D], support_y [S], x [N, D], every) -> [T + 1, N, W] if every else [N, W]
Trajectory = Callable[[Tensor, Tensor, Tensor, bool], Tensor]
# the same over episodes: support_x [E, S, D], support_y [E, S], x [E, N, D] -> [E, T + 1, N, W] or [E, N, W]
StackedTrajectory = Callable[[Tensor, Tensor, Tensor, bool], Tensor]


def init_head(dims: Sequence[int], ways: int, seed: int, device: torch.device | str = "cpu",
              dtype: torch.dtype | None = None) -> Params:
    """An MLP ``dims[0] -> dims[1] -> ... -> ways`` initialised like ``nn.Linear`` (uniform +-1/sqrt(fan_in)).

    Args:
        dims: input size D followed by the hidden sizes (``[D]`` alone gives a linear head).
        ways: W, the output size.
        seed: seeds a private generator (the global RNG is untouched).
    Returns:
        ``{"w{i}": [out, in], "b{i}": [out]}`` on ``device`` in ``dtype`` (default: torch's default dtype).
    """
    gen = torch.Generator().manual_seed(seed)
    dtype = dtype or torch.get_default_dtype()
    sizes = [*dims, ways]
    params: Params = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        bound = 1.0 / math.sqrt(fan_in)
        w = (torch.rand(fan_out, fan_in, generator=gen, dtype=torch.float64) * 2 - 1) * bound
        b = (torch.rand(fan_out, generator=gen, dtype=torch.float64) * 2 - 1) * bound
        params[f"w{i}"] = w.to(device=device, dtype=dtype)
        params[f"b{i}"] = b.to(device=device, dtype=dtype)
    return params


def layer_indices(params: Params) -> list[int]:
    """The layer indices present in ``params``, ascending."""
    return sorted(int(k[1:]) for k in params if k.startswith("w"))


def head_forward(params: Params, x: Tensor) -> Tensor:
    """``x [..., D] -> logits [..., W]``: linear layers with ReLU between them."""
    layers = layer_indices(params)
    for n, i in enumerate(layers):
        x = F.linear(x, params[f"w{i}"], params[f"b{i}"])
        if n < len(layers) - 1:
            x = F.relu(x)
    return x


def body_forward(params: Params, x: Tensor) -> Tensor:
    """``x [..., D] -> features [..., H]``: every layer of ``params`` followed by a ReLU (identity if empty)."""
    for i in layer_indices(params):
        x = F.relu(F.linear(x, params[f"w{i}"], params[f"b{i}"]))
    return x


def last_keys(params: Params) -> tuple[str, str]:
    """The keys of the last layer (the one ANIL adapts)."""
    i = layer_indices(params)[-1]
    return f"w{i}", f"b{i}"


def last_params(params: Params) -> Params:
    """The last layer alone: a linear head ``H -> W``."""
    return {k: params[k] for k in last_keys(params)}


def body_params(params: Params) -> Params:
    """Every layer but the last (empty for a linear head)."""
    last = last_keys(params)
    return {k: v for k, v in params.items() if k not in last}


def check_episodes(name: str, built_ways: int, built_dim: int, ways: int, support_x: Tensor) -> None:
    """Raise a one-line error unless the episodes have the ways and embedding size the head was built for."""
    if ways != built_ways:
        raise MetalearnError(f"{name}: built for {built_ways}-way episodes, got ways={ways}")
    if support_x.shape[-1] != built_dim:
        raise MetalearnError(f"{name}: built for {built_dim}-d embeddings, got {support_x.shape[-1]}")


def selection_f1(pred: Tensor, target: Tensor, ways: int) -> Tensor:
    """Model selection's score, macro-F1 over the last dim: pred, target [..., N] ints (broadcastable) -> [...].
    Target < 0 is padding.

    :func:`metalearn.util.metrics.macro_f1` (scikit-learn's convention) over any leading dims; an episode with
    no real row scores 0 rather than NaN, so it never wins a model selection.
    """
    pred, target = torch.broadcast_tensors(pred, target)
    n = pred.shape[-1]
    flat_pred, flat_target = pred.reshape(-1, n), target.reshape(-1, n)
    f1 = metrics.macro_f1(flat_pred, flat_target, flat_target >= 0, ways)
    return f1.nan_to_num(0.0).reshape(pred.shape[:-1])


def select_by_validation(query_logits: Tensor, val_logits: Tensor, val_y: Tensor) -> Tensor:
    """Per episode, the query logits at the step of best validation macro-F1 (ties: fewer steps).

    Args:
        query_logits: [E, T + 1, Q, W]; val_logits: [E, T + 1, V, W]; val_y: [E, V] (< 0 = padding).
    Returns:
        [E, Q, W].
    """
    scores = selection_f1(val_logits.argmax(-1), val_y.unsqueeze(1), val_logits.shape[-1])  # [E, T + 1]
    best = scores.argmax(dim=1)  # the first maximum, i.e. the fewest steps
    return query_logits[torch.arange(len(best), device=best.device), best]


def predict_episodes(trajectory: Trajectory, support_x: Tensor, support_y: Tensor, query_x: Tensor,
                     val_x: Tensor | None = None, val_y: Tensor | None = None,
                     chunk_size: int | None = None) -> Tensor:
    """Vmap one episode's ``trajectory`` over [E, ...] episodes (``chunk_size`` at a time, to bound memory);
    with validation data, return each episode's query logits at its best step. Returns logits [E, Q, W]."""
    def stacked(sx: Tensor, sy: Tensor, x: Tensor, every: bool) -> Tensor:  # [E, T + 1, N, W] or [E, N, W]
        return vmap(lambda a, b, c: trajectory(a, b, c, every), chunk_size=chunk_size)(sx, sy, x)
    return predict_stacked(stacked, support_x, support_y, query_x, val_x, val_y, None)


def predict_stacked(trajectory: StackedTrajectory, support_x: Tensor, support_y: Tensor, query_x: Tensor,
                    val_x: Tensor | None = None, val_y: Tensor | None = None,
                    chunk_size: int | None = None) -> Tensor:
    """Run the episode-stacked ``trajectory`` on [E, ...] episodes, ``chunk_size`` at a time (to bound memory);
    with validation data, return each episode's query logits at its best step. Returns logits [E, Q, W]."""
    step = max(chunk_size or len(support_x), 1)
    chunks = range(0, len(support_x), step)
    if val_x is None or val_y is None:
        return torch.cat([trajectory(support_x[i:i + step], support_y[i:i + step], query_x[i:i + step], False)
                          for i in chunks])
    x = torch.cat([query_x, val_x.to(query_x)], dim=1)
    logits = torch.cat([trajectory(support_x[i:i + step], support_y[i:i + step], x[i:i + step], True)
                        for i in chunks])  # [E, T + 1, Q + V, W]
    q = query_x.shape[1]
    return select_by_validation(logits[:, :, :q], logits[:, :, q:], val_y.to(logits.device))
