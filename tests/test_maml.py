"""MAML, FOMAML, ANIL, Meta-SGD and Reptile: vectorised vs per-episode parity, meta-gradient properties,
learning on synthetic speakers, determinism, and model selection by validation macro-F1."""

from __future__ import annotations

import contextlib
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from metalearn.fewshot.algorithms.heads import (
    body_forward,
    body_params,
    head_forward,
    init_head,
    last_params,
    select_by_validation,
    selection_f1,
)
from metalearn.fewshot.algorithms.maml import (
    ANIL,
    FOMAML,
    MAML,
    ANILConfig,
    FOMAMLConfig,
    MAMLConfig,
    MetaSGD,
    MetaSGDConfig,
)
from metalearn.fewshot.algorithms.reptile import Reptile, ReptileConfig, inner_train
from metalearn.util.errors import MetalearnError
from tests.reference_impls import (
    adapt_one_reference,
    meta_delta_reference,
    meta_gradients_reference,
    predict_reference,
)

D, W = 12, 5
GRADIENT = {"maml": (MAML, MAMLConfig), "fomaml": (FOMAML, FOMAMLConfig), "anil": (ANIL, ANILConfig),
            "metasgd": (MetaSGD, MetaSGDConfig)}
ALL = {**GRADIENT, "reptile": (Reptile, ReptileConfig)}


class SpeakerTasks:
    """Synthetic speakers: class means = shared prototype + speaker shift + per-speaker-class offset.

    Classes differ only in the first ``signal`` dims; the speaker shift and the noise span every dim, so a head
    that learns to look at the right dims across speakers adapts better from few shots. Each episode draws one
    speaker and ``ways`` of its classes in a random order (labels are positions), or for ``binary`` one target
    class (label 0 or 1 at random) against a mix of the others.
    """

    def __init__(self, dim: int, ways: int, shots: int, queries: int, speakers: range, seed: int,
                 binary: bool = False, n_classes: int = 5, signal: int = 4) -> None:
        g = torch.Generator().manual_seed(1234)  # the same world for every sampler
        self.means = torch.randn(40, 1, dim, generator=g).expand(40, n_classes, dim).clone()
        self.means[:, :, :signal] += 2 * torch.randn(n_classes, signal, generator=g)
        self.means[:, :, :signal] += 0.5 * torch.randn(40, n_classes, signal, generator=g)
        self.ways, self.shots, self.queries, self.binary = ways, shots, queries, binary
        self.speakers, self.n_classes, self.dim = list(speakers), n_classes, dim
        self.gen = torch.Generator().manual_seed(seed)

    def _classes(self, n: int) -> torch.Tensor:
        g = self.gen
        if not self.binary:
            return torch.randperm(self.n_classes, generator=g)[: self.ways, None].expand(self.ways, n)
        target = int(torch.randint(self.n_classes, (1,), generator=g))
        others = torch.tensor([c for c in range(self.n_classes) if c != target])
        pair = torch.stack([torch.full((n,), target), others[torch.randint(len(others), (n,), generator=g)]])
        return pair.flip(0) if float(torch.rand(1, generator=g)) < 0.5 else pair

    def sample(self, n_episodes: int) -> tuple[torch.Tensor, ...]:
        k, n = self.shots, self.shots + self.queries
        out = []
        for _ in range(n_episodes):
            s = self.speakers[int(torch.randint(len(self.speakers), (1,), generator=self.gen))]
            x = self.means[s][self._classes(n)] + torch.randn(self.ways, n, self.dim, generator=self.gen)
            y = torch.arange(self.ways)[:, None].expand(self.ways, n)
            out.append((x[:, :k].reshape(-1, self.dim), y[:, :k].reshape(-1),
                        x[:, k:].reshape(-1, self.dim), y[:, k:].reshape(-1)))
        return tuple(torch.stack(t) for t in zip(*out, strict=True))


@pytest.fixture(autouse=True)
def one_thread():
    """These tensors are tiny: a second intra-op thread only adds synchronisation, and on a busy machine
    (a second process on the cores) it made meta-steps 30x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@contextlib.contextmanager
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def small(name: str, seed: int = 0, **overrides):
    """A float64 model with a small head and short inner loops."""
    cls, cfg_cls = ALL[name]
    base = {"hidden": (16,), "inner_lr": 0.3, "inner_steps": 3, "test_steps": 4, "meta_batch": 4}
    if name == "reptile":
        base["inner_optimizer"] = "sgd"
    cfg = cfg_cls(**{**base, **overrides})
    with float64():
        return cls(D, W, cfg, seed=seed)


def random_batch(e: int = 3, s: int = 10, q: int = 7, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(e, s, D, generator=g, dtype=torch.float64), torch.randint(0, W, (e, s), generator=g),
            torch.randn(e, q, D, generator=g, dtype=torch.float64), torch.randint(0, W, (e, q), generator=g))


def max_diff(a: dict, b: dict) -> float:
    return max(float((a[g][k] - b[g][k]).detach().abs().max()) for g in a for k in a[g])


# --- the head ---------------------------------------------------------------------------------------


def test_head_is_body_then_last_layer():
    p = init_head([D, 8, 6], W, seed=3)
    x = torch.randn(4, 2, D)
    assert head_forward(p, x).shape == (4, 2, W)
    assert torch.allclose(head_forward(p, x), head_forward(last_params(p), body_forward(body_params(p), x)))
    assert all(torch.equal(p[k], v) for k, v in init_head([D, 8, 6], W, seed=3).items())


# --- parity of the vectorised and per-episode paths (float64) --------------------------------------


@pytest.mark.parametrize("name", list(GRADIENT))
def test_adapted_parameters_match_reference(name):
    m = small(name)
    sx, sy, _, _ = random_batch()
    *_, head = m.heads(m.meta, sx, sy, m.cfg.inner_steps)
    fast = head.dense()  # the adapting layers (ANIL: the last one), a low-rank first layer formed explicitly
    assert set(fast) == ({"w1", "b1"} if name == "anil" else {"w0", "b0", "w1", "b1"})
    for e in range(len(sx)):
        ref = adapt_one_reference(m, m.meta, sx[e], sy[e], m.cfg.inner_steps)
        for k in fast:
            assert torch.allclose(fast[k][e], ref[k], atol=1e-5, rtol=0), (name, k)
    assert not torch.allclose(fast["w1"][0], m.meta["head"]["w1"])


@pytest.mark.parametrize("name", list(GRADIENT))
def test_meta_gradients_match_reference(name):
    m = small(name)
    batch = random_batch()
    loss, grads = m.meta_gradients(batch)
    loss_ref, grads_ref = meta_gradients_reference(m, batch)
    assert abs(float(loss - loss_ref)) < 1e-5
    assert max_diff(grads, grads_ref) < 1e-5


@pytest.mark.parametrize("name", list(ALL))
def test_predictions_match_reference(name):
    m = small(name)
    sx, sy, qx, _ = random_batch()
    fast, ref = m.predict(sx, sy, qx, W), predict_reference(m, sx, sy, qx, W)
    assert fast.shape == (3, 7, W)
    assert float((fast - ref).abs().max()) < 1e-5
    chunked = small(name, predict_chunk=2).predict(sx, sy, qx, W)
    assert float((fast - chunked).abs().max()) < 1e-12


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_reptile_update_matches_torch_optim_loop(optimizer):
    m = small("reptile", inner_optimizer=optimizer, inner_lr=0.3 if optimizer == "sgd" else 0.01)
    batch = random_batch()
    fast, ref = m.meta_delta(batch), meta_delta_reference(m, batch)
    assert max_diff({"d": fast}, {"d": ref}) < 1e-5
    assert all(float(v.abs().max()) > 0 for v in fast.values())


# --- meta-gradient properties ----------------------------------------------------------------------


@pytest.mark.parametrize("name", list(GRADIENT))
def test_meta_gradients_reach_every_meta_parameter(name):
    m = small(name)
    _, grads = m.meta_gradients(random_batch())
    expected = {"head", "lr"} if name == "metasgd" else {"head"}
    assert set(grads) == expected
    for group, key in itertools.chain.from_iterable(((g, k) for k in grads[g]) for g in grads):
        assert float(grads[group][key].abs().sum()) > 0, (group, key)  # ANIL: the body through the query loss


def test_first_order_differs_from_second_order_and_equals_query_gradient_at_adapted_params():
    batch = random_batch()
    second, first = small("maml"), small("fomaml")
    _, g2 = second.meta_gradients(batch)
    _, g1 = first.meta_gradients(batch)
    assert max_diff(g1, g2) > 1e-6
    # First order: d(adapted)/d(init) is taken as the identity, so the meta-gradient is the mean over episodes
    # of the query-loss gradient at the adapted parameters, computed here with inner gradients detached.
    head = {k: v.detach() for k, v in first.meta["head"].items()}
    expected = {k: torch.zeros_like(v) for k, v in head.items()}
    for sx, sy, qx, qy in zip(*batch, strict=True):
        fast = dict(head)
        for _ in range(first.cfg.inner_steps):
            fast = {k: v.requires_grad_() for k, v in fast.items()}
            grads = torch.autograd.grad(F.cross_entropy(head_forward(fast, sx), sy), list(fast.values()))
            fast = {k: (v - first.cfg.inner_lr * g).detach() for (k, v), g in zip(fast.items(), grads, strict=True)}
        fast = {k: v.requires_grad_() for k, v in fast.items()}
        qgrads = torch.autograd.grad(F.cross_entropy(head_forward(fast, qx), qy), list(fast.values()))
        for k, g in zip(fast, qgrads, strict=True):
            expected[k] += g / len(batch[0])
    assert max_diff(g1, {"head": expected}) < 1e-10


@pytest.mark.parametrize("name", ["maml", "metasgd", "anil"])
def test_second_order_meta_gradient_matches_finite_differences(name):
    m = small(name)
    batch = random_batch()
    _, grads = m.meta_gradients(batch)
    g = torch.Generator().manual_seed(5)
    direction = {grp: {k: torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in m.meta[grp].items()}
                 for grp in m.meta}

    def loss_at(eps: float) -> float:
        meta = {grp: {k: v.detach() + eps * direction[grp][k] for k, v in m.meta[grp].items()} for grp in m.meta}
        return float(m.batch_loss(meta, batch))

    numeric = (loss_at(1e-5) - loss_at(-1e-5)) / 2e-5
    analytic = sum(float((grads[grp][k] * direction[grp][k]).sum()) for grp in grads for k in grads[grp])
    assert abs(numeric - analytic) < 1e-6 * max(1.0, abs(analytic))


@pytest.mark.parametrize("name", list(ALL))
def test_adaptation_lowers_the_support_loss(name):
    m = small(name)
    sx, sy, _, _ = random_batch()
    head = m.meta["head"]
    if name == "reptile":
        adapted, _ = inner_train(head, sx, sy, 5, m.cfg.inner_lr, m.cfg.inner_optimizer)
    else:
        *_, fast = m.heads(m.meta, sx, sy, 5)
        adapted = {**{k: v.expand(len(sx), *v.shape) for k, v in head.items()}, **fast.dense()}
    for e in range(len(sx)):
        before = F.cross_entropy(head_forward(head, sx[e]), sy[e]).item()
        after = F.cross_entropy(head_forward({k: v[e] for k, v in adapted.items()}, sx[e]), sy[e]).item()
        assert after < before - 0.05, (e, before, after)


# --- learning, determinism, purity -----------------------------------------------------------------

LEARN = {"hidden": (32,), "inner_lr": 0.3, "inner_steps": 3, "test_steps": 5, "meta_batch": 8, "meta_lr": 3e-3}
REPTILE = {"inner_optimizer": "sgd", "meta_lr": 0.5, "inner_steps": 5}


@pytest.mark.parametrize("ways", [5, 2])
@pytest.mark.parametrize("name", list(ALL))
def test_meta_training_beats_chance_on_unseen_speakers(name, ways):
    cls, cfg_cls = ALL[name]
    m = cls(32, ways, cfg_cls(**{**LEARN, **(REPTILE if name == "reptile" else {})}), seed=0)
    binary = ways == 2
    sx, sy, qx, qy = SpeakerTasks(32, ways, 2, 10, speakers=range(30, 40), seed=2, binary=binary).sample(100)
    before = float((m.predict(sx, sy, qx, ways).argmax(-1) == qy).double().mean())
    m.meta_train(SpeakerTasks(32, ways, shots=2, queries=4, speakers=range(0, 30), seed=1, binary=binary), 80)
    accuracy = float((m.predict(sx, sy, qx, ways).argmax(-1) == qy).double().mean())
    assert accuracy > (0.6 if ways == 5 else 0.7), accuracy  # chance: 0.2 and 0.5
    assert accuracy > before + (0.08 if ways == 5 else 0.0), (before, accuracy)  # meta-training helped


@pytest.mark.parametrize("name", list(ALL))
def test_meta_train_is_deterministic_by_seed(name):
    runs = []
    for seed in (0, 0, 1):
        m = small(name, seed=seed)
        m.meta_train(SpeakerTasks(D, W, 1, 3, speakers=range(10), seed=7), 3)
        runs.append(m.meta)
    assert max_diff(runs[0], runs[1]) == 0
    assert max_diff(runs[0], runs[2]) > 0


@pytest.mark.parametrize("name", list(ALL))
def test_predict_leaves_the_meta_parameters_untouched(name):
    m = small(name)
    m.meta_train(SpeakerTasks(D, W, 1, 3, speakers=range(10), seed=7), 2)
    before = {g: {k: v.detach().clone() for k, v in m.meta[g].items()} for g in m.meta}
    sx, sy, qx, qy = random_batch()
    m.predict(sx, sy, qx, W)
    m.predict(sx, sy, qx, W, val_x=qx, val_y=qy)
    assert max_diff(before, m.meta) == 0
    with pytest.raises(MetalearnError, match="5-way"):
        m.predict(sx, sy.clamp(max=1), qx, 2)


@pytest.mark.parametrize("name", list(ALL))
def test_default_config_trains_and_predicts_float32(name):
    cls, cfg_cls = ALL[name]
    m = cls(D, W, seed=0)
    assert m.cfg == cfg_cls() and m.name == name
    m.meta_train(SpeakerTasks(D, W, 1, 3, speakers=range(10), seed=7), 1)
    sx, sy, qx, _ = (t.float() if t.is_floating_point() else t for t in random_batch())
    logits = m.predict(sx, sy, qx, W)
    assert logits.shape == (3, 7, W) and logits.dtype == torch.float32 and bool(torch.isfinite(logits).all())


# --- model selection by validation macro-F1 --------------------------------------------------------


def numpy_macro_f1(pred: np.ndarray, target: np.ndarray) -> float:
    keep = target >= 0
    pred, target = pred[keep], target[keep]
    scores = []
    for c in sorted(set(pred) | set(target)):
        tp = np.sum((pred == c) & (target == c))
        fp = np.sum((pred == c) & (target != c))
        fn = np.sum((pred != c) & (target == c))
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def test_macro_f1_matches_a_numpy_loop():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randint(0, 4, (6, 20), generator=g), torch.randint(-1, 4, (6, 20), generator=g)
    target[0] = 2  # one class only
    ours = selection_f1(pred, target, 4)
    for e in range(6):
        assert abs(float(ours[e]) - numpy_macro_f1(pred[e].numpy(), target[e].numpy())) < 1e-12


def test_select_by_validation_takes_the_best_step_and_fewer_steps_on_ties():
    val_y = torch.tensor([[0, 1, 1], [0, 1, 1]])
    good, bad = F.one_hot(torch.tensor([0, 1, 1]), 2).double(), F.one_hot(torch.tensor([1, 1, 1]), 2).double()
    val_logits = torch.stack([torch.stack([bad, bad, good]), torch.stack([bad, good, good])])  # [2, 3, 3, 2]
    query_logits = torch.arange(2 * 3 * 1 * 2, dtype=torch.float64).reshape(2, 3, 1, 2)
    out = select_by_validation(query_logits, val_logits, val_y)
    assert torch.equal(out[0], query_logits[0, 2]) and torch.equal(out[1], query_logits[1, 1])


@pytest.mark.parametrize("name", list(ALL))
def test_predict_with_validation_returns_query_logits_at_the_best_step(name):
    m = small(name)
    sx, sy, qx, _ = random_batch(e=2)
    vx = torch.randn(2, 25, D, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    x = torch.cat([qx, vx], 1)
    with torch.no_grad():
        traj = m.trajectory(sx, sy, x, True) if name == "reptile" else m.trajectory(m.meta, sx, sy, x, True)
    assert traj.shape == (2, m.cfg.test_steps + 1, x.shape[1], W)  # [E, T + 1, Q + V, W]
    val_pred = traj[:, :, qx.shape[1]:].argmax(-1)  # [E, T + 1, V]
    best = torch.tensor([2, 3])  # construct val labels that the model predicts perfectly at these steps
    val_y = val_pred[torch.arange(2), best].clone()
    val_y[:, -1] = -1  # a padded row, ignored
    scores = selection_f1(val_pred, val_y.unsqueeze(1), W)
    assert all(float(scores[e, : best[e]].max()) < 1.0 for e in range(2)), "degenerate case: an earlier step ties"
    out = m.predict(sx, sy, qx, W, val_x=vx, val_y=val_y)
    for e in range(2):
        assert torch.allclose(out[e], traj[e, best[e], : qx.shape[1]], atol=1e-12)
    assert not torch.allclose(out, m.predict(sx, sy, qx, W))
