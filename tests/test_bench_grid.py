"""bench_trials.py's grid section on a tiny grid: the engine's scores equal the loop's and the autograd path's,
and the written-down work is what the episodes imply."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from metalearn.fewshot.episodes import binary_episodes

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import bench_trials  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def test_tiny_grid_scores_equal_the_references_and_reports_its_floors() -> None:
    """Two classes train through one weight row, the references through two: the same math, so on this grid's
    60 trials rounding moves no macro-F1, and none against the engine in float64."""
    result = bench_trials.grid(2, 4, speakers=1, ks=(2, 8), steps=12, chunk=16)
    assert result["trials"] == 2 * 15 * 2 and result["chunk"] == 16
    assert result["max_macro_f1_gap_vs_reference"] == 0.0 and result["reference_trials_timed"] == 4
    assert result["max_macro_f1_gap_vs_autograd_path"] == 0.0 and result["trials_whose_macro_f1_differs"] == 0
    assert result["trials_whose_macro_f1_differs_from_float64 (engine, autograd path)"] == [0, 0]
    assert result["autograd_path_trials"] == 30
    kernel = result["compiled_kernel"]
    assert kernel["trials_whose_macro_f1_differs (variant 0: from the torch engine, from float64)"] == [0, 0]
    assert len(kernel["engine_ms_per_trial_by_variant"]) == 2 and kernel["engine_ms_per_trial"] > 0
    assert "compiled_kernel: speedup_over_the_torch_engine" in bench_trials.markdown({**_meta(), "grid": result})
    floors = bench_trials.floors(result, {"matmul_peak_gflops": 1e-3, "copy_bandwidth_gbs": 1e-3,
                                          "thin_product_gflops": 1e-4})
    assert floors["floor_s_matmul_at_peak"] == pytest.approx(result["matmul_gflop"] / 1e-3, rel=0.1)
    assert floors["training_products_s_at_thin_product_rate"] == pytest.approx(result["training_gflop"] / 1e-4,
                                                                               rel=0.1)


def _meta() -> dict:
    return {"command": "python experiments/bench_trials.py", "threads": 1, "torch": "2"}


def test_work_counts_products_and_passes() -> None:
    rows, _ = bench_trials.paper_table(seed=0, speakers=1, dim=4)
    episodes, _ = binary_episodes(rows, ["0001"], bench_trials.EMOTIONS, (2,), 1, seed=0)
    s, v, q, d, steps = 2, 100, 150, 768, 20  # support k = 2; ESD's evaluation and test splits of 5 emotions
    assert {(len(e.support), len(e.validation), len(e.query)) for e in episodes} == {(s, v, q)}
    work = bench_trials.work(episodes, steps, dim=d, eval_every=10)  # checkpoints 10 and 20
    n = len(episodes)
    # one weight row trains two classes; one logit difference per checkpoint (2); both query logits
    assert work["matmul_gflop"] == pytest.approx(n * (steps * 4 * s * d + 2 * v * d * 2 + 2 * q * d * 2) / 1e9)
    assert work["training_gflop"] == pytest.approx(n * steps * 4 * s * d / 1e9)
    assert work["memory_gb"] == pytest.approx((n * 3 * s + v + q) * d * 4 / 1e9)  # one speaker's val and query
    assert work["cache_gb"] == pytest.approx(n * steps * (2 * s * d * 4 + 7 * (d + 2) * 4) / 1e9)


def test_thin_product_rate_is_measured() -> None:
    assert 0 < bench_trials.thin_product_gflops(dim=64, support=4, episodes=4) < 1e4
