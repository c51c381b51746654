"""The benchmark scripts' logic: the written-down FLOP counts equal what the textbook loops execute."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from metalearn.fewshot.algorithms.functional import cross_entropy
from metalearn.fewshot.algorithms.heads import body_forward, body_params, head_forward, init_head, last_params
from metalearn.fewshot.algorithms.maml import FOMAML, MAML, MAMLConfig
from tests.reference_impls import adapt_reference, inner_train_reference, meta_gradients_reference

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
from bench_roofline import (  # noqa: E402
    anil_dense_flops,
    counted_flops,
    maml_dense_flops,
    reptile_dense_flops,
)

E, S, Q, D, W, T = 3, 5, 7, 16, 4, 3


def _batch():
    g = torch.Generator().manual_seed(0)
    return (torch.randn(E, S, D, generator=g), torch.randint(0, W, (E, S), generator=g),
            torch.randn(E, Q, D, generator=g), torch.randint(0, W, (E, Q), generator=g))


@pytest.mark.parametrize("hidden", [(), (8,), (8, 6)])
@pytest.mark.parametrize("second_order", [True, False])
def test_maml_count_is_what_the_per_episode_loop_executes(hidden, second_order) -> None:
    cls = MAML if second_order else FOMAML
    model = cls(D, W, MAMLConfig(hidden=hidden, inner_steps=T))
    executed = counted_flops(lambda: meta_gradients_reference(model, _batch()))
    assert executed == E * maml_dense_flops([D, *hidden, W], S, Q, T, second_order)
    fast = counted_flops(lambda: model.meta_gradients(_batch()))
    assert 0 < fast <= executed  # the stacked path's low-rank first layer does less


@pytest.mark.parametrize("second_order", [True, False])
def test_anil_count_is_a_loop_that_computes_the_features_once(second_order) -> None:
    head = {k: v.requires_grad_() for k, v in init_head([D, 8, 6], W, 0).items()}
    sx, sy, qx, qy = _batch()

    def meta_gradient() -> None:
        losses = []
        for e in range(E):
            body = body_params(head)
            last = adapt_reference(last_params(head), body_forward(body, sx[e]), sy[e], T, 0.1, not second_order)
            losses.append(cross_entropy(head_forward(last, body_forward(body, qx[e])), qy[e]))
        torch.autograd.grad(torch.stack(losses).mean(), list(head.values()))

    assert counted_flops(meta_gradient) == E * anil_dense_flops([D, 8, 6, W], S, Q, T, second_order)


def test_reptile_count_is_what_the_torch_optim_loop_executes() -> None:
    head = init_head([D, 8], W, 0)
    sx, sy, _, _ = _batch()
    executed = counted_flops(lambda: [inner_train_reference(head, sx[e], sy[e], T, 0.01, "adam") for e in range(E)])
    assert executed == E * reptile_dense_flops([D, 8, W], S, T)


def test_gpu_script_runs_on_cpu_tiny(tmp_path) -> None:
    """`bench_gpu.py --device cpu --tiny`: every part runs and reports, both fine-tuning paths agree."""
    import bench_gpu

    result = bench_gpu.main(["--device", "cpu", "--tiny", "--out", str(tmp_path / "bench_gpu")])
    assert (tmp_path / "bench_gpu.md").read_text().startswith("# GPU benchmark")
    assert set(result) >= {"extraction", "pretune", "full_finetune", "grid"}
    assert result["extraction"]["fp32"]["clips_per_s"] > 0 and result["extraction"]["bf16_max_pooled_gap"] < 1e-2
    assert all(v["steps_per_s"] > 0 for v in result["pretune"].values())
    ff = result["full_finetune"]
    assert ff["max_query_logit_gap"] < 1e-5 and ff["clips_through_trunk"] == 2 * 5 * 3  # each clip once
    assert ff["train_step_flop_ratio"] > 1 and ff["eval_batch_flop_ratio"] > ff["train_step_flop_ratio"]
    assert result["grid"]["trials"] == 15 and result["grid"]["max_macro_f1_gap_vs_reference"] == 0.0
