"""The frozen linear probe: it separates what is separable, and it minimises the loss it says it does."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from scipy.special import logsumexp

from metalearn.pretune.fit import fit_probe, mix_states, probe_loss, probe_scores


def _blobs(n: int, d: int, classes: int, spread: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = 5.0 * torch.randn(classes, d, generator=g, dtype=torch.float64)
    y = torch.arange(n) % classes
    return centres[y] + spread * torch.randn(n, d, generator=g, dtype=torch.float64) + 100.0, y


def test_separable_toy_set_is_learnt_exactly_and_deterministically() -> None:
    x, y = _blobs(90, 6, 3, 0.3, seed=0)
    probe = fit_probe(x, y, 3, l2=1e-3)
    assert probe.accuracy(x, y) == 1.0
    test_x, test_y = _blobs(30, 6, 3, 0.3, seed=0)[0][:30], y[:30]
    assert probe.accuracy(test_x, test_y) == 1.0
    again = fit_probe(x, y, 3, l2=1e-3)
    assert torch.equal(probe.weight, again.weight) and torch.equal(probe.bias, again.bias)
    assert math.isnan(probe.accuracy(x[:0], y[:0]))


def test_probe_matches_scipy_on_the_same_loss() -> None:
    x, y = _blobs(60, 4, 3, 4.0, seed=1)  # overlapping: a finite, interior optimum
    l2 = 0.05
    probe = fit_probe(x, y, 3, l2)
    z = ((x - x.mean(0)) / x.std(0, unbiased=False)).numpy()
    onehot = np.eye(3)[y.numpy()]

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:12].reshape(4, 3), theta[12:]
        logits = z @ w + b
        p = np.exp(logits - logsumexp(logits, axis=1, keepdims=True))
        value = -np.mean(np.sum(onehot * (logits - logsumexp(logits, axis=1, keepdims=True)), axis=1))
        grad = (p - onehot) / len(z)
        return value + 0.5 * l2 * np.sum(w * w), np.concatenate([(z.T @ grad + l2 * w).ravel(), grad.sum(0)])

    ref = minimize(loss, np.zeros(15), jac=True, method="L-BFGS-B", options={"gtol": 1e-12, "ftol": 1e-15})
    assert ref.success
    ours = probe_loss(probe.weight, probe.bias, torch.from_numpy(z), y, l2).item()
    assert ours == pytest.approx(ref.fun, abs=1e-9)
    np.testing.assert_allclose(probe.weight.numpy(), ref.x[:12].reshape(4, 3), atol=1e-4)
    np.testing.assert_allclose(probe.bias.numpy(), ref.x[12:], atol=1e-4)


def test_scores_pick_the_l2_on_dev_and_mix_states() -> None:
    x, y = _blobs(120, 5, 4, 3.0, seed=2)
    train, dev, test = (x[:80], y[:80]), (x[80:100], y[80:100]), (x[100:], y[100:])
    score = probe_scores(train, dev, test, 4, [10.0, 1e-3])
    by_l2 = {l2: fit_probe(*train, 4, l2).accuracy(*dev) for l2 in (10.0, 1e-3)}
    assert score.l2 == max(by_l2, key=lambda k: (by_l2[k], -list(by_l2).index(k)))
    assert score.dev == by_l2[score.l2]
    states = torch.randn(7, 3, 2, dtype=torch.float64)
    w = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    assert torch.allclose(mix_states(states, w), (states * w[None, :, None]).sum(1))
    assert torch.equal(mix_states(states[:, :1], None), states[:, 0])
    with pytest.raises(ValueError, match="no mix weights"):
        mix_states(states, None)
