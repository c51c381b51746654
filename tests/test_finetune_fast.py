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
    support_standardizer,
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


@pytest.mark.parametrize("scored_together", [1, 4])
def test_chunk_sizes_change_results_only_by_rounding(monkeypatch: pytest.MonkeyPatch, scored_together: int) -> None:
    """One episode per training chunk, its heads scored alone or with up to three more chunks' (groups of 4, 4
    and 1 of the 9 episodes): the results of one chunk for all."""
    sx, sy, qx, vx, vy = _batch(2, episodes=9)
    cfg = FinetuneConfig(steps=25, lr=0.05, eval_every=5)
    init = init_heads(9, sx.shape[-1], 2, 0.0, 0, torch.float32, CPU)
    whole = fit_linear_heads(FitInputs(sx, sy, qx, vx, vy), 2, cfg, init)
    saved = scored_together * len(finetune_fast.checkpoints(cfg)) * 2 * (sx.shape[-1] + 1)  # floats of heads kept
    for name, value in (("ROWS", 7), ("SCORE_ROWS", 20), ("SAVED", saved)):  # 1 episode per training chunk
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


@pytest.mark.parametrize(("init_std", "weight_decay"), [(0.0, 0.0), (0.3, 0.0), (0.0, 1e-2)])
def test_two_classes_train_through_one_row_as_every_row_would(init_std: float, weight_decay: float) -> None:
    """Class 1's head moves by exactly minus class 0's step, so one row trains both: the heads after every kept
    step equal the row-by-row trainer's to float32 rounding and are no further from a float64 run."""
    sx, sy, *_ = _batch(5, episodes=10, shots=4)
    cfg = FinetuneConfig(steps=30, lr=0.05, weight_decay=weight_decay, init_std=init_std)
    init = init_heads(sx.shape[0], sx.shape[-1], 2, init_std, 2, torch.float32, CPU)
    init["bias"] += torch.tensor([0.2, -0.1]) if init_std else 0.0  # random heads need not be opposite
    kept = [0, 1, 10, 30]
    two = finetune_fast.train_two_classes(sx, sy, cfg, init["weight"], init["bias"], kept)
    rows = finetune_fast.train_rows(sx, sy, 2, cfg, init["weight"], init["bias"], kept)
    exact = finetune_fast.train_rows(sx.double(), sy, 2, cfg, init["weight"].double(), init["bias"].double(), kept)
    torch.testing.assert_close(two, rows, atol=2e-5, rtol=1e-5)
    assert (two.double() - exact).abs().max() <= 2 * (rows.double() - exact).abs().max() + 1e-7


def test_two_classes_with_weight_decay_train_every_row_unless_the_heads_start_opposite() -> None:
    """Weight decay pulls each head towards 0: the heads' steps stay opposite only from opposite heads."""
    sx, sy, *_ = _batch(6, episodes=4)
    cfg = FinetuneConfig(steps=20, lr=0.05, weight_decay=0.1)
    zero = init_heads(4, sx.shape[-1], 2, 0.0, 0, torch.float32, CPU)
    drawn = init_heads(4, sx.shape[-1], 2, 0.5, 0, torch.float32, CPU)
    for init, opposite in ((zero, True), (drawn, False)):
        assert finetune_fast._opposite(init["weight"], init["bias"]) is opposite
        fast = finetune_fast.train(sx, sy, 2, cfg, init["weight"], init["bias"], [20])
        rows = finetune_fast.train_rows(sx, sy, 2, cfg, init["weight"], init["bias"], [20])
        torch.testing.assert_close(fast, rows, atol=2e-5, rtol=1e-5)
    wrong = finetune_fast.train_two_classes(sx, sy, cfg, drawn["weight"], drawn["bias"], [20])
    assert (wrong - rows).abs().max() > 1e-3, "the one-row trainer must not serve decayed heads that start apart"


def test_two_classes_keep_the_bias_difference_where_float64_does_at_one_row_per_class() -> None:
    """One support row per class, standardised on their mean, zero heads: the rows are opposite, so the bias
    gradient is 0 in exact arithmetic at every step and Adam turns float32 rounding into whole steps. The logit
    difference's bias must stay where a float64 run keeps it, as the two-row trainer's does (tying the two
    biases to one number moved it by ~1e-2, a learning rate's steps)."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(64, 2, 768, generator=g) + 2.0
    sy = torch.tensor([[1, 0]]).expand(64, 2).contiguous()
    mean, scale = support_standardizer(x, sy, "global")
    sx = (x - mean) / scale
    cfg = FinetuneConfig(steps=20, lr=0.01)
    init = init_heads(64, 768, 2, 0.0, 0, torch.float32, CPU)
    exact = finetune_fast.train_rows(sx.double(), sy, 2, cfg, init["weight"].double(), init["bias"].double(), [20])

    def bias_gap(heads: torch.Tensor) -> float:
        return float(((heads[..., 1, -1] - heads[..., 0, -1]).double() - (exact[..., 1, -1] - exact[..., 0, -1]))
                     .abs().max())

    rows = finetune_fast.train_rows(sx, sy, 2, cfg, init["weight"], init["bias"], [20])
    assert bias_gap(rows) < 1e-4
    assert bias_gap(finetune_fast.train_two_classes(sx, sy, cfg, init["weight"], init["bias"], [20])) < 1e-4
