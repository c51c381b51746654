"""Logits over rows shared by episodes (shared_rows) against standardising every episode's gathered rows."""

from __future__ import annotations

import pytest
import torch

from metalearn.fewshot.algorithms import shared_rows
from metalearn.fewshot.algorithms.finetune import FinetuneConfig, FitInputs, init_heads, support_standardizer
from metalearn.fewshot.algorithms.finetune_fast import fit_linear_heads
from metalearn.fewshot.algorithms.rows import RowIndex
from metalearn.fewshot.algorithms.shared_rows import shared_logits

pytestmark = pytest.mark.usefixtures("one_thread")


def _index(offset: float = 3.0, dim: int = 32) -> tuple[RowIndex, torch.Tensor]:
    """A table with a large common offset and 7 episodes over 3 row sets: episodes 0-2 and 5 read set A (5 not
    beside the others), 3-4 set B with two padded rows, 6 its own rows; and support rows [7, 6, D]."""
    g = torch.Generator().manual_seed(0)
    table = offset + torch.randn(40, dim, generator=g)
    a, b, c = torch.arange(0, 8), torch.tensor([8, 9, 10, 11, 12, 13, 0, 0]), torch.arange(20, 28)
    index = torch.stack([a, a, a, b, b, a, c])
    mask = torch.ones(7, 8, dtype=torch.bool)
    mask[3:5, 6:] = False
    support = offset + torch.randn(7, 6, dim, generator=g)
    return RowIndex(table, index, mask), support


def _reference(heads: torch.Tensor, x: RowIndex, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Each episode's rows gathered, standardised, multiplied (the per-episode path), in float64."""
    rows = (x.dense().double() - mean.double()) / scale.double()
    return rows @ heads[..., :-1].double().transpose(1, 2) + heads[..., -1].double().unsqueeze(1)


@pytest.mark.parametrize("standardize", ["global", "per_dim", "none"])
@pytest.mark.parametrize("offset", [3.0, 300.0])
def test_shared_logits_equal_standardising_each_episode(standardize: str, offset: float) -> None:
    """Every episode's logits (shared, gathered, padded and lone row sets; from the first or a later episode) as
    close to float64 as standardising its own gathered rows in float32; centring keeps that so when the features
    carry a large offset (shown failing without it)."""
    x, support = _index(offset)
    mean, scale = support_standardizer(support, torch.zeros(7, 6, dtype=torch.long), standardize)
    heads = torch.randn(7, 4, 33, generator=torch.Generator().manual_seed(1))
    exact = _reference(heads, x, mean, scale)
    dense = ((x.dense() - mean) / scale) @ heads[..., :-1].transpose(1, 2) + heads[..., -1].unsqueeze(1)
    for first, count in ((0, 7), (2, 4)):
        shared = shared_logits(heads[first:first + count], x, first, mean, scale)
        part = slice(first, first + count)
        shared_error = (shared.double() - exact[part]).abs().max().item()
        dense_error = (dense[part].double() - exact[part]).abs().max().item()
        assert shared_error <= 2 * dense_error + 1e-6, (shared_error, dense_error)


def test_fits_from_row_indexes_equal_fits_from_gathered_rows() -> None:
    """Model selection and query logits of ``fit_linear_heads`` on RowIndex rows equal those on the same rows
    gathered (two classes and three)."""
    x, support = _index()
    for ways in (2, 3):
        sy = torch.arange(6).remainder(ways).expand(7, 6).contiguous()
        vy = torch.arange(8).remainder(ways).expand(7, 8).contiguous().masked_fill(~x.mask, -1)
        standardizer = support_standardizer(support, sy, "global")
        init = init_heads(7, 32, ways, 0.0, 0, torch.float32, torch.device("cpu"))
        cfg = FinetuneConfig(steps=20, lr=0.05, eval_every=4)
        by_index = fit_linear_heads(FitInputs(support, sy, x, x, vy), ways, cfg, init, standardizer)
        gathered = fit_linear_heads(FitInputs(support, sy, x.dense(), x.dense(), vy), ways, cfg, init, standardizer)
        assert torch.equal(by_index[2], gathered[2])
        torch.testing.assert_close(by_index[1], gathered[1], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("standardize", ["global", "per_dim"])
@pytest.mark.parametrize("row_floats", [1 << 22, 1])
def test_row_sets_read_by_equally_many_episodes_share_one_product(standardize: str, row_floats: int,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Three row sets read by two episodes each (interleaved, one set padded) go through one batched product, or
    one product per set where ROW_FLOATS allows one set's rows only: every episode's logits still equal its own
    standardised rows' (as close to float64 as those), padding rows included."""
    monkeypatch.setattr(shared_rows, "ROW_FLOATS", row_floats)
    g = torch.Generator().manual_seed(2)
    table = 3.0 + torch.randn(30, 16, generator=g)
    a, b, c = torch.arange(0, 5), torch.tensor([5, 6, 7, 0, 0]), torch.arange(10, 15)
    index = torch.stack([a, b, c, a, c, b])
    mask = torch.ones(6, 5, dtype=torch.bool)
    mask[[1, 5], 3:] = False
    x = RowIndex(table, index, mask)
    support = 3.0 + torch.randn(6, 4, 16, generator=g)
    mean, scale = support_standardizer(support, torch.zeros(6, 4, dtype=torch.long), standardize)
    heads = torch.randn(6, 3, 17, generator=g)
    exact = _reference(heads, x, mean, scale)
    dense = ((x.dense() - mean) / scale) @ heads[..., :-1].transpose(1, 2) + heads[..., -1].unsqueeze(1)
    shared = shared_logits(heads, x, 0, mean, scale)
    assert shared.shape == (6, 5, 3)
    shared_error = (shared.double() - exact).abs().max().item()
    assert shared_error <= 2 * (dense.double() - exact).abs().max().item() + 1e-6, shared_error
