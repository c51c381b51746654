"""Episode-stacked heads: hand-written gradients equal autograd's, the low-rank first layer equals the dense
one, first order builds no graph, and the stacked fine-tuning scores what it trains."""

from __future__ import annotations

import pytest
import torch

from metalearn.fewshot.algorithms.functional import cross_entropy
from metalearn.fewshot.algorithms.heads import head_forward, init_head
from metalearn.fewshot.algorithms.stacked import (
    ce_grad,
    finetune,
    forward,
    mlp_backward,
    mlp_forward,
    path_logits,
    sgd_path,
)

E, S, N, D, W = 3, 6, 5, 7, 4


def _data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(E, S, D, generator=g, dtype=torch.float64)
    y = torch.randint(0, W, (E, S), generator=g)
    y[1, -2:] = -1  # padded rows
    return x, y, torch.randn(E, N, D, generator=g, dtype=torch.float64)


def _stacked_head(hidden: tuple[int, ...], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed + 1)
    head = init_head([D, *hidden], W, seed, dtype=torch.float64)
    return {k: (v + 0.1 * torch.randn(E, *v.shape, generator=g, dtype=v.dtype)).requires_grad_()
            for k, v in head.items()}


@pytest.mark.parametrize("hidden", [(), (8,), (8, 6)])
def test_hand_written_gradients_equal_autograd(hidden) -> None:
    x, y, _ = _data()
    params = _stacked_head(hidden)
    loss = cross_entropy(forward(params, x), y).sum()  # episodes are independent: per-episode gradients
    expected = torch.autograd.grad(loss, list(params.values()))
    ids = range(len(hidden) + 1)
    layers = [(params[f"w{i}"], params[f"b{i}"]) for i in ids]
    logits, inputs = mlp_forward(layers, x, relu_first=False)
    grads, none = mlp_backward(layers, inputs, ce_grad(logits, y), relu_first=False)
    assert none is None
    got = [g for pair in grads for g in pair]
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    # relu_first: the gradient w.r.t. the pre-activation fed to the first layer
    z = x.clone().requires_grad_()
    logits, inputs = mlp_forward(layers, z, relu_first=True)
    _, dz = mlp_backward(layers, inputs, ce_grad(logits, y), relu_first=True)
    (expected_dz,) = torch.autograd.grad(cross_entropy(logits, y).sum(), [z])
    torch.testing.assert_close(dz, expected_dz, atol=1e-12, rtol=0)


@pytest.mark.parametrize("hidden", [(), (8,)])
@pytest.mark.parametrize("first_order", [False, True])
def test_low_rank_first_layer_equals_the_dense_one(hidden, first_order) -> None:
    """A scalar step size keeps the first layer low-rank; the same rate as per-entry tensors (Meta-SGD's form)
    keeps every layer dense: same logits, same meta-gradients."""
    x, y, q = _data(1)
    init = {k: v.requires_grad_() for k, v in init_head([D, *hidden], W, 0, dtype=torch.float64).items()}
    low = list(sgd_path(init, x, y, 4, 0.2, first_order))
    dense = list(sgd_path(init, x, y, 4, {k: torch.full_like(v, 0.2) for k, v in init.items()}, first_order))
    assert low[-1].support is not None and low[-1].coef is not None and dense[-1].support is None
    for a, b in zip(low, dense, strict=True):
        torch.testing.assert_close(a.logits(q), b.logits(q), atol=1e-12, rtol=0)
        for k, v in b.dense().items():
            torch.testing.assert_close(a.dense()[k], v.expand_as(a.dense()[k]), atol=1e-12, rtol=0)
    ga = torch.autograd.grad(low[-1].logits(q).square().sum(), list(init.values()))
    gb = torch.autograd.grad(dense[-1].logits(q).square().sum(), list(init.values()))
    for a, b in zip(ga, gb, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    adapted = low[-1].dense()
    for e in range(E):  # the explicit parameters score like the low-rank form
        torch.testing.assert_close(head_forward({k: v[e] for k, v in adapted.items()}, q[e]), low[-1].logits(q)[e],
                                   atol=1e-12, rtol=0)


def test_first_order_inner_loop_is_constant_and_second_order_is_not() -> None:
    x, y, q = _data(2)
    init = {k: v.requires_grad_() for k, v in init_head([D, 8], W, 0, dtype=torch.float64).items()}
    *_, fo = sgd_path(init, x, y, 3, 0.2, first_order=True)
    *_, so = sgd_path(init, x, y, 3, 0.2, first_order=False)
    assert not fo.coef.requires_grad and not any(v.requires_grad for v in fo.sums.values())
    assert so.coef.requires_grad and all(v.requires_grad for v in so.sums.values())
    assert fo.logits(q).requires_grad  # the query pass still reaches the initialisation
    torch.testing.assert_close(fo.logits(q), so.logits(q), atol=1e-12, rtol=0)  # same values, other graph


def test_path_logits_every_step_and_last() -> None:
    x, y, q = _data(3)
    init = init_head([D, 8], W, 0, dtype=torch.float64)
    every = path_logits(sgd_path(init, x, y, 3, 0.2), q, every=True)
    assert every.shape == (E, 4, N, W)
    torch.testing.assert_close(every[:, 0], head_forward(init, q), atol=1e-12, rtol=0)
    torch.testing.assert_close(every[:, -1], path_logits(sgd_path(init, x, y, 3, 0.2), q, every=False))


@pytest.mark.parametrize("adam", [None, ((0.0, 0.999), 1e-8)])
def test_finetune_scores_the_parameters_it_returns(adam) -> None:
    x, y, q = _data(4)
    init = init_head([D, 8], W, 0, dtype=torch.float64)
    before = {k: v.clone() for k, v in init.items()}
    params, logits = finetune(init, x, y, 5, 0.05, adam, rows=q)
    assert all(torch.equal(before[k], v) for k, v in init.items())  # the updates are in place on copies
    assert logits.shape == (E, 6, N, W)
    torch.testing.assert_close(logits[:, 0], head_forward(init, q), atol=1e-12, rtol=0)
    torch.testing.assert_close(logits[:, -1], forward(params, q), atol=1e-12, rtol=0)
    losses = [float(cross_entropy(forward(p, x), y).mean()) for p in (
        {k: v.expand(E, *v.shape) for k, v in init.items()}, params)]
    assert losses[1] < losses[0] - 0.05
    assert all(v.shape[0] == E for v in params.values())
