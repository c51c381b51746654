"""The fast linear-head path (finetune_fast) against the autograd path it replaces and the per-episode loop."""

from __future__ import annotations

import pytest
import torch

from metalearn.fewshot.algorithms import finetune_fast
from metalearn.fewshot.algorithms.finetune import (
    Finetune,
    FinetuneConfig,
    FitInputs,
    fit_heads,
    fit_heads_autograd,
    fit_heads_loop,
    init_heads,
)
from metalearn.fewshot.algorithms.finetune_fast import checkpoints, fit_linear_heads

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


def _batch(seed: int, episodes: int = 12, ways: int = 2, shots: int = 3, val: int = 7, query: int = 9,
           dim: int = 24) -> tuple[torch.Tensor, ...]:
    """float32 episodes with class structure, padded support and validation rows, one episode with no real
    validation row (its macro-F1 is undefined), raw features with an offset (for the standardiser)."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.randn(episodes, ways, dim, generator=g)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, ways, (episodes, n), generator=g)
        x = protos.gather(1, y[..., None].expand(-1, -1, dim)) + 1.5 * torch.randn(episodes, n, dim, generator=g)
        return x + 3.0, y

    (sx, sy), (vx, vy), (qx, _) = draw(ways * shots), draw(val), draw(query)
    sy[:, :ways] = torch.arange(ways)  # every class present
    sy[0, -1] = -1  # a padded support row
    vy[1, -2:] = -1  # padded validation rows
    vy[2] = -1  # no real validation row
    return sx, sy, qx, vx, vy


CASES = {
    "binary": ({}, {}),
    "5-way": ({"ways": 5, "shots": 2}, {}),
    "decay, random init, odd period": ({"ways": 3}, {"weight_decay": 1e-2, "init_std": 0.2, "eval_every": 7,
                                                     "steps": 30}),
    "every step": ({}, {"eval_every": 1, "steps": 12, "lr": 0.05}),
}


@pytest.mark.parametrize("with_val", [True, False])
@pytest.mark.parametrize("case", list(CASES))
def test_fast_path_equals_the_autograd_path_and_the_loop(case: str, with_val: bool) -> None:
    shape, options = CASES[case]
    sx, sy, qx, vx, vy = _batch(1, **shape)
    ways = shape.get("ways", 2)
    cfg = FinetuneConfig(**{"steps": 40, "lr": 0.03, **options})
    init = init_heads(sx.shape[0], sx.shape[-1], ways, cfg.init_std, 3, torch.float32, CPU)
    val = (vx, vy) if with_val else (None, None)
    fast, old, ref = (f(FitInputs(sx, sy, qx, *val), ways, cfg, init) for f in (fit_heads, fit_heads_autograd,
                                                                                fit_heads_loop))
    for other in (old, ref):
        torch.testing.assert_close(fast.logits, other.logits, atol=1e-5, rtol=1e-5)
        assert torch.equal(fast.best_step, other.best_step)
        for k in ("weight", "bias"):
            torch.testing.assert_close(fast.params[k], other.params[k], atol=1e-5, rtol=1e-5)
    if with_val and case == "binary":
        assert (fast.best_step != cfg.steps).any(), "the case should make selection matter"


def test_chunk_sizes_change_results_only_by_rounding(monkeypatch: pytest.MonkeyPatch) -> None:
    sx, sy, qx, vx, vy = _batch(2, episodes=9)
    cfg = FinetuneConfig(steps=25, lr=0.05, eval_every=5)
    init = init_heads(9, sx.shape[-1], 2, 0.0, 0, torch.float32, CPU)
    whole = fit_linear_heads(FitInputs(sx, sy, qx, vx, vy), 2, cfg, init)
    for name, value in (("ROWS", 7), ("SCORE_ROWS", 20), ("SAVED", 1)):  # 1, 1 and 1 episode per chunk
        monkeypatch.setattr(finetune_fast, name, value)
    chunked = fit_linear_heads(FitInputs(sx, sy, qx, vx, vy), 2, cfg, init)
    for a, b in zip(whole[0].values(), chunked[0].values(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)  # kernels may round differently per batch size
    torch.testing.assert_close(whole[1], chunked[1], atol=1e-6, rtol=1e-6)
    assert torch.equal(whole[2], chunked[2])


@pytest.mark.parametrize("standardize", ["global", "per_dim", "none"])
def test_standardising_by_chunk_equals_standardising_up_front(standardize: str) -> None:
    """``Finetune.fit`` hands raw rows and the standardiser to the fast path: the same numbers as the reference
    loop on rows standardised up front."""
    sx, sy, qx, vx, vy = _batch(3, ways=3)
    cfg = FinetuneConfig(steps=30, lr=0.05, eval_every=3, standardize=standardize)
    fast = Finetune(sx.shape[-1], cfg).fit(sx, sy, qx, 3, vx, vy)
    ref = Finetune(sx.shape[-1], FinetuneConfig(**{**cfg.__dict__, "vectorized": False})).fit(sx, sy, qx, 3, vx, vy)
    torch.testing.assert_close(fast.logits, ref.logits, atol=1e-5, rtol=1e-5)
    assert torch.equal(fast.best_step, ref.best_step)


def test_zero_steps_and_checkpoints() -> None:
    assert checkpoints(FinetuneConfig(steps=25, eval_every=10)) == [10, 20, 25]
    assert checkpoints(FinetuneConfig(steps=20, eval_every=0)) == list(range(1, 21))
    sx, sy, qx, vx, vy = _batch(4)
    init = init_heads(sx.shape[0], sx.shape[-1], 2, 0.3, 1, torch.float32, CPU)
    before = {k: v.clone() for k, v in init.items()}
    fast = fit_heads(FitInputs(sx, sy, qx, vx, vy), 2, FinetuneConfig(steps=0), init)
    fit_heads(FitInputs(sx, sy, qx, vx, vy), 2, FinetuneConfig(steps=3), init)
    assert all(torch.equal(init[k], before[k]) for k in init), "the initial heads must not be updated in place"
    torch.testing.assert_close(fast.logits, qx @ init["weight"] + init["bias"][:, None])
    assert torch.equal(fast.best_step, torch.zeros(sx.shape[0], dtype=torch.long))
