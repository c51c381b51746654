"""Functional pieces against NumPy loops; fine-tuning parity and model selection; ProtoNet and SimpleShot."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metalearn.fewshot.algorithms.base import Adapter
from metalearn.fewshot.algorithms.finetune import (
    Finetune,
    FinetuneConfig,
    FitInputs,
    fit_heads,
    fit_heads_loop,
    init_heads,
    support_standardizer,
)
from metalearn.fewshot.algorithms.functional import (
    AdamSettings,
    adam_init,
    batched_adam_step,
    cosine_logits,
    cross_entropy,
    linear_logits,
    prototypes,
    prototypical_loss,
    squared_euclidean_logits,
)
from metalearn.fewshot.algorithms.protonet import ProtoNet, ProtoNetConfig
from metalearn.fewshot.algorithms.simpleshot import SimpleShot, SimpleShotConfig
from metalearn.util.metrics import macro_f1

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see tests/conftest.py


def _episodes(seed: int, episodes: int, ways: int, shots: int, queries: int, dim: int = 32, sep: float = 2.0,
              offset: float = 5.0, nuisance: int = 0, dtype: torch.dtype = torch.float32):
    """Per-episode Gaussian clusters: class means with N(0, sep^2) entries + unit noise, shifted by ``offset``.

    With ``nuisance`` > 0, class means live in the first dim - nuisance dims and the last ``nuisance`` dims
    carry noise of std 4 (a projection can learn to drop them). Returns sx, sy, qx, qy.
    """
    gen = torch.Generator().manual_seed(seed)
    informative = dim - nuisance
    means = torch.zeros(episodes, ways, dim, dtype=dtype)
    means[..., :informative] = torch.randn(episodes, ways, informative, generator=gen, dtype=dtype) * sep

    def draw(per_class: int):
        y = torch.arange(ways).repeat_interleave(per_class).expand(episodes, -1).contiguous()
        x = means.gather(1, y.unsqueeze(-1).expand(-1, -1, dim)) + torch.randn(episodes, y.shape[1], dim,
                                                                               generator=gen, dtype=dtype)
        if nuisance:
            x[..., informative:] *= 4
        return x + offset, y

    sx, sy = draw(shots)
    qx, qy = draw(queries)
    return sx, sy, qx, qy


class TinySampler:
    """Fresh synthetic training episodes on every call, seeded (the TaskSampler protocol)."""

    def __init__(self, ways: int = 5, shots: int = 5, queries: int = 5, dim: int = 32, nuisance: int = 24,
                 seed: int = 0) -> None:
        self.ways, self.shots, self.queries, self.dim, self.nuisance = ways, shots, queries, dim, nuisance
        self.calls = seed * 100_000

    def sample(self, n_episodes: int):
        self.calls += 1
        return _episodes(self.calls, n_episodes, self.ways, self.shots, self.queries, self.dim,
                         nuisance=self.nuisance)


def _methods(dim: int) -> list:
    return [
        Finetune(dim, FinetuneConfig(steps=50)),
        Finetune(dim, FinetuneConfig(steps=50, vectorized=False)),
        ProtoNet(dim),
        ProtoNet(dim, ProtoNetConfig(projection=True, proj_dim=64)),
        SimpleShot(dim),
        SimpleShot(dim, SimpleShotConfig(center="none")),
    ]


# ---------------------------------------------------------------- functional pieces vs NumPy loops


def test_prototypes_and_distances_match_loops() -> None:
    rng = np.random.default_rng(0)
    e, s, q, d, w = 3, 7, 4, 5, 3
    sx, qx = rng.normal(size=(e, s, d)), rng.normal(size=(e, q, d))
    sy = rng.integers(0, w, size=(e, s))
    sy[0, -1] = -1  # padding
    sy[1] = np.where(sy[1] == 2, 0, sy[1])  # class 2 absent in episode 1 -> zero prototype
    protos = prototypes(torch.from_numpy(sx), torch.from_numpy(sy), w).numpy()
    sq = squared_euclidean_logits(torch.from_numpy(qx), torch.from_numpy(protos)).numpy()
    cos = cosine_logits(torch.from_numpy(qx), torch.from_numpy(protos), scale=3.0).numpy()
    for i in range(e):
        for c in range(w):
            rows = [sx[i, j] for j in range(s) if sy[i, j] == c]
            expected = np.mean(rows, axis=0) if rows else np.zeros(d)
            np.testing.assert_allclose(protos[i, c], expected, atol=1e-12)
            for j in range(q):
                np.testing.assert_allclose(sq[i, j, c], -np.sum((qx[i, j] - expected) ** 2), atol=1e-10)
                norm = max(np.linalg.norm(expected), 1e-8) * np.linalg.norm(qx[i, j])
                np.testing.assert_allclose(cos[i, j, c], 3.0 * qx[i, j] @ expected / norm, atol=1e-10)


def test_linear_logits_cross_entropy_and_prototypical_loss_match_loops() -> None:
    rng = np.random.default_rng(1)
    e, n, d, w = 2, 6, 4, 3
    x, wt, b = rng.normal(size=(e, n, d)), rng.normal(size=(e, d, w)), rng.normal(size=(e, w))
    y = rng.integers(0, w, size=(e, n))
    y[1, :2] = -1
    params = {"weight": torch.from_numpy(wt), "bias": torch.from_numpy(b)}
    logits = linear_logits(params, torch.from_numpy(x)).numpy()
    ce = cross_entropy(torch.from_numpy(logits), torch.from_numpy(y)).numpy()
    for i in range(e):
        losses = []
        for j in range(n):
            row = x[i, j] @ wt[i] + b[i]
            np.testing.assert_allclose(logits[i, j], row, atol=1e-12)
            if y[i, j] >= 0:
                losses.append(np.log(np.sum(np.exp(row))) - row[y[i, j]])
        assert ce[i] == pytest.approx(np.mean(losses), abs=1e-10)
    sx, sy, qx, qy = (torch.from_numpy(a) for a in (x, np.abs(y), x[:, ::-1].copy(), y))
    expected = np.mean(cross_entropy(squared_euclidean_logits(qx, prototypes(sx, sy, w)), qy).numpy())
    assert prototypical_loss(sx, sy, qx, qy, w).item() == pytest.approx(expected)


def test_batched_adam_step_matches_numpy_and_torch_adam() -> None:
    rng = np.random.default_rng(2)
    p0 = {"weight": rng.normal(size=(3, 4, 2)), "bias": rng.normal(size=(3, 2))}
    grads = [{k: rng.normal(size=v.shape) for k, v in p0.items()} for _ in range(5)]
    lr, betas, eps, wd = 0.05, (0.8, 0.99), 1e-8, 0.01
    params = {k: torch.from_numpy(v.copy()) for k, v in p0.items()}
    state = adam_init(params)
    torch_params = {k: torch.nn.Parameter(torch.from_numpy(v.copy())) for k, v in p0.items()}
    opt = torch.optim.Adam(torch_params.values(), lr=lr, betas=betas, eps=eps, weight_decay=wd)
    np_p, m, v = dict(p0), {k: 0 * a for k, a in p0.items()}, {k: 0 * a for k, a in p0.items()}
    for step, g in enumerate(grads, start=1):
        params, state = batched_adam_step(params, {k: torch.from_numpy(a) for k, a in g.items()}, state,
                                          AdamSettings(lr, betas, eps, wd), step)
        for k, tp in torch_params.items():
            tp.grad = torch.from_numpy(g[k].copy())
            gk = g[k] + wd * np_p[k]
            m[k] = betas[0] * m[k] + (1 - betas[0]) * gk
            v[k] = betas[1] * v[k] + (1 - betas[1]) * gk**2
            m_hat, v_hat = m[k] / (1 - betas[0] ** step), v[k] / (1 - betas[1] ** step)
            np_p[k] = np_p[k] - lr * m_hat / (np.sqrt(v_hat) + eps)
        opt.step()
    for k in p0:
        np.testing.assert_allclose(params[k].numpy(), torch_params[k].detach().numpy(), atol=1e-12)
        np.testing.assert_allclose(params[k].numpy(), np_p[k], atol=1e-6)


# ---------------------------------------------------------------- fine-tuning: parity and model selection


@pytest.mark.parametrize("with_val", [False, True])
@pytest.mark.parametrize("standardize", ["global", "per_dim"])
def test_finetune_vectorised_matches_reference(with_val: bool, standardize: str) -> None:
    sx, sy, qx, _ = _episodes(3, episodes=5, ways=3, shots=3, queries=4, dim=16, sep=0.7, dtype=torch.float64)
    vx, vy, _, _ = _episodes(4, episodes=5, ways=3, shots=5, queries=1, dim=16, sep=0.7, dtype=torch.float64)
    vy[0, -3:] = -1  # padded validation rows
    cfg = FinetuneConfig(steps=40, lr=0.05, weight_decay=1e-3, init_std=0.1, eval_every=3, standardize=standardize)
    mean, scale = support_standardizer(sx, sy, standardize)
    sx, qx, vx = (sx - mean) / scale, (qx - mean) / scale, (vx - mean) / scale
    init = init_heads(5, 16, 3, cfg.init_std, 0, torch.float64, CPU)
    val = (vx, vy) if with_val else (None, None)
    fast = fit_heads(FitInputs(sx, sy, qx, *val), 3, cfg, init)
    ref = fit_heads_loop(FitInputs(sx, sy, qx, *val), 3, cfg, init)
    for k in ("weight", "bias"):
        torch.testing.assert_close(fast.params[k], ref.params[k], atol=1e-5, rtol=0)
    torch.testing.assert_close(fast.logits, ref.logits, atol=1e-5, rtol=0)
    assert torch.equal(fast.best_step, ref.best_step)


@pytest.mark.parametrize("standardize", ["global", "per_dim"])
def test_support_standardizer_ignores_padding_rows(standardize: str) -> None:
    """Padding support rows (label -1, whatever their values) change no episode's mean or scale: each padded
    episode's statistics equal those of its real rows alone, and an unpadded batch takes the same numbers as
    the padded path would give it."""
    g = torch.Generator().manual_seed(5)
    x = 2.0 + torch.randn(4, 6, 12, generator=g)
    y = torch.randint(0, 3, (4, 6), generator=g)
    padded_y = y.clone()
    padded_y[1, 4:], padded_y[3, 1:] = -1, -1
    garbage = x.clone()
    garbage[1, 4:], garbage[3, 1:] = 1e3, -7.0
    mean, scale = support_standardizer(garbage, padded_y, standardize)
    for e, real in ((0, 6), (1, 4), (2, 6), (3, 1)):
        alone = support_standardizer(x[e:e + 1, :real], y[e:e + 1, :real], standardize)
        torch.testing.assert_close(mean[e], alone[0][0], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(scale[e], alone[1][0], rtol=1e-6, atol=1e-6)
    plain = support_standardizer(x, y, standardize)
    with_padding_path = support_standardizer(torch.cat([x, x[:1]]), torch.cat([y, -torch.ones_like(y[:1])]),
                                             standardize)  # one all-padding episode forces the masked path
    assert torch.equal(plain[0], with_padding_path[0][:4]) and torch.equal(plain[1], with_padding_path[1][:4])


def test_model_selection_returns_the_best_validation_checkpoint() -> None:
    """Random validation labels make the validation macro-F1 wander from checkpoint to checkpoint, so the best
    is often not the last; the choice must equal a brute-force search over heads retrained to each checkpoint."""
    sx, sy, qx, _ = _episodes(5, episodes=8, ways=2, shots=4, queries=5, dim=8, sep=0.5, dtype=torch.float64)
    vx = qx.clone()
    vy = torch.randint(0, 2, qx.shape[:2], generator=torch.Generator().manual_seed(0))
    cfg = FinetuneConfig(steps=30, lr=0.02, eval_every=2, standardize="none")
    init = init_heads(8, 8, 2, 0.3, 1, torch.float64, CPU)
    chosen = fit_heads(FitInputs(sx, sy, qx, vx, vy), 2, cfg, init)
    checkpoints = [*range(2, 31, 2)]
    per_step = [fit_heads(FitInputs(sx, sy, qx), 2, FinetuneConfig(**{**cfg.__dict__, "steps": t}), init)
                for t in checkpoints]
    f1 = torch.stack([macro_f1(r.logits.argmax(-1), vy, None, 2) for r in per_step])  # [T, E]
    best = f1.argmax(0)  # first maximum: ties go to the earliest checkpoint
    for e in range(8):
        assert chosen.best_step[e].item() == checkpoints[best[e]]
        torch.testing.assert_close(chosen.logits[e], per_step[best[e]].logits[e])
    assert (chosen.best_step != cfg.steps).any(), "the case should make selection matter"
    assert not torch.allclose(chosen.logits, per_step[-1].logits)


def test_finetune_has_no_python_loop_over_episodes() -> None:
    """The vectorised path's cost does not grow with one Python-level call per episode."""
    calls = []
    original = torch.nn.Linear.forward
    torch.nn.Linear.forward = lambda self, x: calls.append(1) or original(self, x)  # type: ignore[method-assign]
    try:
        sx, sy, qx, _ = _episodes(0, episodes=64, ways=2, shots=4, queries=3)
        Finetune(32, FinetuneConfig(steps=3)).predict(sx, sy, qx, 2)
    finally:
        torch.nn.Linear.forward = original  # type: ignore[method-assign]
    assert not calls


# ---------------------------------------------------------------- every method: accuracy, shapes, padding


@pytest.mark.parametrize("ways,shots", [(5, 5), (2, 8)])
def test_methods_beat_chance_on_separable_clusters(ways: int, shots: int) -> None:
    sx, sy, qx, qy = _episodes(7, episodes=20, ways=ways, shots=shots, queries=10, sep=1.0)
    for method in _methods(32):
        assert isinstance(method, Adapter)
        method.meta_train(TinySampler(ways, shots, dim=32, nuisance=0), 5)
        logits = method.predict(sx, sy, qx, ways)
        assert logits.shape == (20, ways * 10, ways)
        acc = (logits.argmax(-1) == qy).float().mean().item()
        assert acc > 0.8, (method.name, acc)


def test_padded_query_rows_do_not_change_real_rows() -> None:
    sx, sy, qx, _ = _episodes(8, episodes=4, ways=3, shots=2, queries=3)
    padded = torch.cat([qx, 100 * torch.randn(4, 5, 32)], dim=1)
    for method in _methods(32):
        real = method.predict(sx, sy, qx, 3)
        assert method.predict(sx, sy, padded, 3)[:, : qx.shape[1]].allclose(real, atol=1e-4), method.name


def test_finetune_accepts_padded_validation_and_names() -> None:
    sx, sy, qx, qy = _episodes(9, episodes=3, ways=2, shots=4, queries=4)
    qy = qy.clone()
    qy[2] = -1  # an episode with no real validation row falls back to the final head
    fit = Finetune(32, FinetuneConfig(steps=20, eval_every=5)).fit(sx, sy, qx, 2, qx, qy)
    assert fit.best_step[2].item() == 20
    names = {m.name for m in _methods(32)}
    assert names == {"finetune", "protonet", "protonet_proj", "simpleshot"}


# ---------------------------------------------------------------- ProtoNet projection and SimpleShot


def test_protonet_projection_meta_training_lowers_loss_and_reaches_parameters() -> None:
    method = ProtoNet(32, ProtoNetConfig(projection=True, proj_dim=16, hidden=32, lr=3e-3, meta_batch=8), seed=1)
    batch = TinySampler(seed=9).sample(32)
    loss = method.loss(*batch, ways=5)
    loss.backward()
    for p in method.embed.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    method.embed.zero_grad()
    method.meta_train(TinySampler(seed=1), 60)
    assert len(method.history) == 60
    with torch.no_grad():
        after = method.loss(*batch, ways=5)
    assert after.item() < 0.7 * loss.item()
    same_seed = ProtoNet(32, ProtoNetConfig(projection=True, proj_dim=16, hidden=32), seed=1)
    assert torch.equal(same_seed.embed[0].weight, ProtoNet(32, same_seed.cfg, seed=1).embed[0].weight)


def test_meta_trained_projection_learns_to_ignore_nuisance_dimensions() -> None:
    sx, sy, qx, qy = _episodes(7, episodes=20, ways=5, shots=5, queries=10, nuisance=24)
    raw = ProtoNet(32)
    proj = ProtoNet(32, ProtoNetConfig(projection=True, proj_dim=16, hidden=32, lr=3e-3, meta_batch=8), seed=1)
    proj.meta_train(TinySampler(seed=1), 80)
    raw_acc, proj_acc = ((m.predict(sx, sy, qx, 5).argmax(-1) == qy).float().mean().item() for m in (raw, proj))
    assert raw_acc < 0.6 < 0.85 < proj_acc


def test_simpleshot_support_centring_is_shift_invariant() -> None:
    sx, sy, qx, _ = _episodes(10, episodes=4, ways=5, shots=3, queries=2, dtype=torch.float64)
    shift = 50 * torch.randn(32, dtype=torch.float64)
    method = SimpleShot(32)
    torch.testing.assert_close(method.predict(sx, sy, qx, 5), method.predict(sx + shift, sy, qx + shift, 5))
    uncentred = SimpleShot(32, SimpleShotConfig(center="none"))
    assert not torch.allclose(uncentred.predict(sx, sy, qx, 5), uncentred.predict(sx + shift, sy, qx + shift, 5))


def test_simpleshot_base_mean_comes_from_meta_training() -> None:
    method = SimpleShot(32, SimpleShotConfig(center="base", meta_batch=16))
    sx, sy, qx, qy = _episodes(11, episodes=10, ways=5, shots=5, queries=5)
    with pytest.raises(Exception, match="meta_train"):
        method.predict(sx, sy, qx, 5)
    method.meta_train(TinySampler(nuisance=0), 10)
    assert method.base_mean is not None
    assert method.base_mean.sub(5.0).abs().max().item() < 1.0  # the synthetic features are centred on 5
    acc = (method.predict(sx, sy, qx, 5).argmax(-1) == qy).float().mean().item()
    assert acc > 0.8
