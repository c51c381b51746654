"""The optional learn2learn backend gives MAML's meta-gradients and predictions (skipped when not installed)."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch
import torch.nn.functional as F

from metalearn.fewshot.algorithms.maml import MAML, MAMLConfig

pytestmark = pytest.mark.skipif(importlib.util.find_spec("learn2learn") is None,
                                reason="learn2learn not installed (make setup-l2l)")


def _batch(e=4, ways=3, shots=2, queries=3, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    protos = 2 * torch.randn(ways, dim, generator=g)
    sy = torch.arange(ways).repeat_interleave(shots).expand(e, -1).clone()
    qy = torch.arange(ways).repeat_interleave(queries).expand(e, -1).clone()
    return (protos[sy] + torch.randn(e, sy.shape[1], dim, generator=g), sy,
            protos[qy] + torch.randn(e, qy.shape[1], dim, generator=g), qy)


def test_same_meta_gradient_and_predictions_as_the_vectorised_maml():
    from metalearn.fewshot.algorithms.l2l_backend import L2LMAML

    cfg = MAMLConfig(hidden=(16,), inner_lr=0.1, inner_steps=3, test_steps=3)
    ours, theirs = MAML(8, 3, cfg, seed=0), L2LMAML(8, 3, cfg, seed=0)
    sx, sy, qx, qy = _batch()
    _, grads = ours.meta_gradients((sx, sy, qx, qy))
    loss = sum(F.cross_entropy(theirs._adapted(sx[e], sy[e], 3)(qx[e]), qy[e]) for e in range(4)) / 4
    loss.backward()
    ref = [p.grad for p in theirs.learner.module.parameters()]
    for key, g in zip(("w0", "b0", "w1", "b1"), ref, strict=True):
        torch.testing.assert_close(grads["head"][key], g, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ours.predict(sx, sy, qx, 3), theirs.predict(sx, sy, qx, 3), atol=1e-5, rtol=1e-5)


def test_import_does_not_pull_gym_or_torchvision():
    from metalearn.fewshot.algorithms.l2l_backend import import_l2l

    import_l2l()
    assert "torchvision" not in sys.modules and "gym" not in sys.modules
