"""GEmo-CLAP losses against a float64 NumPy reference written with plain row loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from metalearn.clap.loss import (
    ClapLoss,
    contrastive_loss,
    equality_targets,
    gender_targets,
    kl_to_targets,
    row_normalize,
    soft_targets,
)
from metalearn.util.errors import MetalearnError

UNKNOWN = "unknown"


# ---------------------------------------------------------------- NumPy reference (loops, float64)

def ref_equal(labels: list) -> np.ndarray:
    b = len(labels)
    return np.array([[1.0 if labels[i] == labels[j] else 0.0 for j in range(b)] for i in range(b)])


def ref_gender(genders: list[str]) -> np.ndarray:
    b = len(genders)
    m = np.zeros((b, b))
    for i in range(b):
        for j in range(b):
            if i == j or (genders[i] != UNKNOWN and genders[i] == genders[j]):
                m[i, j] = 1.0
    return m


def ref_kl(logits: np.ndarray, m: np.ndarray) -> float:
    total = 0.0
    for i in range(len(logits)):
        p = m[i] / m[i].sum()
        row = logits[i] - logits[i].max()
        log_q = row - math.log(np.exp(row).sum())
        total += sum(p[j] * (math.log(p[j]) - log_q[j]) for j in range(len(p)) if p[j] > 0)
    return total / len(logits)


def ref_pair(a: np.ndarray, t: np.ndarray, m: np.ndarray, s_a: float, s_t: float) -> float:
    return 0.5 * (ref_kl(s_a * a @ t.T, m) + ref_kl(s_t * t @ a.T, m.T))


def ref_loss(variant: str, a, t, emotions, genders, alpha: float, s_a: float, s_t: float) -> float:
    if variant == "clip":
        return ref_pair(a, t, np.eye(len(a)), s_a, s_t)
    m_e = ref_equal(emotions)
    if variant == "emo":
        return ref_pair(a, t, m_e, s_a, s_t)
    m_g = ref_gender(genders)
    if variant == "ml":
        return alpha * ref_pair(a, t, m_e, s_a, s_t) + (1 - alpha) * ref_pair(a, t, m_g, s_a, s_t)
    return ref_pair(a, t, alpha * m_e + (1 - alpha) * m_g, s_a, s_t)


# ---------------------------------------------------------------- helpers

def embeddings(rng: np.random.Generator, b: int, e: int = 8) -> tuple[np.ndarray, np.ndarray]:
    a, t = rng.normal(size=(b, e)), rng.normal(size=(b, e))
    return a / np.linalg.norm(a, axis=1, keepdims=True), t / np.linalg.norm(t, axis=1, keepdims=True)


def make_loss(variant: str, alpha: float = 1.0, s_a: float = 1 / 0.07, s_t: float = 1 / 0.07) -> ClapLoss:
    loss = ClapLoss(variant, alpha=alpha).double()
    with torch.no_grad():
        loss.log_scale_audio.fill_(math.log(s_a))
        loss.log_scale_text.fill_(math.log(s_t))
    return loss


def batch(rng: np.random.Generator, b: int, kind: str) -> tuple[list[int], list[str]]:
    emotions = [0] * b if kind == "one_emotion" else rng.integers(0, 4, size=b).tolist()
    if kind == "one_gender":
        genders = ["F"] * b
    elif kind == "all_unknown":
        genders = [UNKNOWN] * b
    else:
        genders = rng.choice(["F", "M", UNKNOWN], size=b).tolist()
    return emotions, genders


def run(loss: ClapLoss, a, t, emotions, genders) -> dict[str, torch.Tensor]:
    return loss(torch.from_numpy(a), torch.from_numpy(t), torch.tensor(emotions), genders)


# ---------------------------------------------------------------- agreement with the reference

@pytest.mark.parametrize("variant", ["clip", "emo", "ml", "sl"])
@pytest.mark.parametrize("b", [1, 2, 5, 16])
@pytest.mark.parametrize("kind", ["mixed", "one_emotion", "one_gender", "all_unknown"])
def test_matches_numpy_reference(variant: str, b: int, kind: str) -> None:
    rng = np.random.default_rng(1000 * b + len(kind))
    a, t = embeddings(rng, b)
    emotions, genders = batch(rng, b, kind)
    alpha, s_a, s_t = 0.3, 12.0, 20.0
    got = run(make_loss(variant, alpha, s_a, s_t), a, t, emotions, genders)["loss"].item()
    want = ref_loss(variant, a, t, emotions, genders, alpha, s_a, s_t)
    assert got == pytest.approx(want, abs=1e-6)


def test_text_direction_uses_transposed_targets() -> None:
    rng = np.random.default_rng(7)
    a, t = embeddings(rng, 6)
    m = rng.uniform(0.1, 1.0, size=(6, 6))  # not symmetric
    zero = torch.tensor(0.0, dtype=torch.float64)
    got = contrastive_loss(torch.from_numpy(a), torch.from_numpy(t), torch.from_numpy(m), zero + 2.0, zero + 1.5)
    assert got.item() == pytest.approx(ref_pair(a, t, m, math.exp(2.0), math.exp(1.5)), abs=1e-9)


def test_target_builders() -> None:
    assert torch.equal(equality_targets(torch.tensor([2, 0, 2])),
                       torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 0, 1]]))
    genders = ["F", UNKNOWN, "F", "M", UNKNOWN]
    m_g = gender_targets(genders)
    assert torch.equal(m_g, torch.from_numpy(ref_gender(genders)).float())
    assert torch.equal(m_g[1], torch.tensor([0.0, 1, 0, 0, 0]))  # unknown matches only itself
    assert torch.equal(m_g, m_g.T)
    assert torch.equal(gender_targets(torch.tensor([0, -1, 0, 1, -1])), m_g)
    assert torch.equal(gender_targets([UNKNOWN] * 3), torch.eye(3))
    assert torch.allclose(row_normalize(soft_targets(equality_targets(torch.tensor([0, 0, 1])), torch.eye(3), 0.5))
                          .sum(dim=1), torch.ones(3))


def test_kl_zero_log_zero_and_self() -> None:
    p = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    logits = torch.log(p.clamp_min(1e-300))
    assert kl_to_targets(logits, p).item() == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------- reductions between variants

def test_alpha_one_reduces_to_emo_and_alpha_zero_to_gender() -> None:
    rng = np.random.default_rng(3)
    a, t = embeddings(rng, 10)
    emotions, genders = batch(rng, 10, "mixed")
    emo = run(make_loss("emo"), a, t, emotions, genders)["loss"]
    assert torch.equal(run(make_loss("ml", 1.0), a, t, emotions, genders)["loss"], emo)
    assert torch.equal(run(make_loss("sl", 1.0), a, t, emotions, genders)["loss"], emo)
    ml0 = run(make_loss("ml", 0.0), a, t, emotions, genders)
    assert torch.equal(ml0["loss"], ml0["loss_gender"])
    sl0 = run(make_loss("sl", 0.0), a, t, emotions, genders)["loss"]
    assert sl0.item() == pytest.approx(ml0["loss"].item(), abs=1e-12)
    assert ml0["loss_gender"].item() != pytest.approx(emo.item(), abs=1e-3)


def test_clip_equals_cross_entropy_both_directions() -> None:
    torch.manual_seed(0)
    a, t = F.normalize(torch.randn(9, 16), dim=1), F.normalize(torch.randn(9, 16), dim=1)
    out = ClapLoss("clip", init_scale=10.0)(a, t)
    labels = torch.arange(9)
    want = 0.5 * (F.cross_entropy(10.0 * a @ t.T, labels) + F.cross_entropy(10.0 * t @ a.T, labels))
    assert out["loss"].item() == pytest.approx(want.item(), abs=1e-5)


# ---------------------------------------------------------------- optimisation behaviour

def test_aligned_embeddings_reach_zero_and_random_ones_do_not() -> None:
    emotions = torch.tensor([0, 1, 2, 0, 1, 2, 2])
    aligned = torch.eye(3, dtype=torch.float64)[emotions]
    loss = make_loss("emo", s_a=100.0, s_t=100.0)
    assert loss(aligned, aligned, emotions)["loss"].item() < 1e-12
    rng = np.random.default_rng(5)
    a, t = embeddings(rng, 7)
    assert run(loss, a, t, emotions.tolist(), None)["loss"].item() > 0.1


@pytest.mark.parametrize("variant", ["clip", "emo", "ml", "sl"])
def test_sgd_decreases_loss_and_gradients_reach_scales(variant: str) -> None:
    torch.manual_seed(1)
    loss = ClapLoss(variant, alpha=0.5, init_scale=5.0)
    raw_a, raw_t = torch.randn(8, 4, requires_grad=True), torch.randn(8, 4, requires_grad=True)
    emotions, genders = torch.tensor([0, 1, 0, 1, 2, 2, 0, 1]), ["F", "M", "M", UNKNOWN, "F", "F", "M", "M"]
    opt = torch.optim.SGD([raw_a, raw_t, *loss.parameters()], lr=0.5)
    values = []
    for _ in range(10):
        opt.zero_grad()
        out = loss(F.normalize(raw_a, dim=1), F.normalize(raw_t, dim=1), emotions, genders)
        out["loss"].backward()
        assert out["loss"].item() >= 0.0
        for p in (loss.log_scale_audio, loss.log_scale_text):
            assert p.grad is not None and torch.isfinite(p.grad) and p.grad.item() != 0.0
        values.append(out["loss"].item())
        opt.step()
    assert values[-1] < values[0]


def test_scales_are_clamped_at_100() -> None:
    loss = ClapLoss("emo", init_scale=50.0)
    with torch.no_grad():
        loss.log_scale_audio.fill_(math.log(1000.0))
    a = F.normalize(torch.randn(4, 3), dim=1)
    out = loss(a, a, torch.tensor([0, 1, 0, 1]))
    assert out["scale_audio"].item() == pytest.approx(100.0)
    assert out["scale_text"].item() == pytest.approx(50.0)
    out["loss"].backward()
    assert loss.log_scale_audio.grad.item() == 0.0  # clamped: no gradient, as in CLIP
    assert loss.log_scale_text.grad.item() != 0.0


# ---------------------------------------------------------------- user errors

def test_errors() -> None:
    a = F.normalize(torch.randn(4, 3), dim=1)
    emotions = torch.tensor([0, 1, 0, 1])
    with pytest.raises(MetalearnError, match="variant"):
        ClapLoss("gemo")
    for alpha in (-0.1, 1.5):
        with pytest.raises(MetalearnError, match="alpha"):
            ClapLoss("ml", alpha=alpha)
    for variant in ("ml", "sl"):
        with pytest.raises(MetalearnError, match="genders"):
            ClapLoss(variant, alpha=0.5)(a, a, emotions)
        with pytest.raises(MetalearnError, match="genders"):
            ClapLoss(variant, alpha=0.5)(a, a, emotions, ["F", "M"])
    with pytest.raises(MetalearnError, match="emotions"):
        ClapLoss("emo")(a, a, torch.tensor([0, 1, 0]))
    with pytest.raises(MetalearnError, match="emotions"):
        ClapLoss("emo")(a, a)
    with pytest.raises(MetalearnError, match="text embeddings"):
        ClapLoss("clip")(a, a[:3])
    with pytest.raises(MetalearnError, match="targets"):
        row_normalize(torch.zeros(2, 2))
