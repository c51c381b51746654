"""The machine's roofs (matrix-multiply peak, copy bandwidth), FLOP counts and a noise-robust timer.

Imported by the ``bench_*`` scripts; measured in the same process and on the same threads as what they compare.

FLOPs are matrix-multiply FLOPs (2 per multiply-add), counted two ways:

- executed: ``torch.utils.flop_counter.FlopCounterMode`` around one meta-step of an implementation (forward,
  backward and double backward; element-wise ops are not counted);
- dense: the work of the textbook formulation (per-task fast weights, autograd through the inner loop), written
  down below. For layers l with a_l = in_l * out_l, A = sum a_l, S support rows, Q query rows, T inner steps:

  * inner step, forward ``2 S A``; backward ``2 S (2 A - a_0)`` (weight gradients of every layer, input
    gradients of all but the first, whose input is data);
  * query pass ``2 Q A`` forward and ``2 Q (2 A - a_0)`` backward to the adapted weights;
  * second order: differentiating each inner step's forward and backward matmuls again, ``4 S (3 A - 2 a_0)``
    per step (each matmul with a differentiable operand gets one matmul per differentiable operand);
  * ANIL (body layers b, last layer a_L, features computed once per task): the body's forward on S + Q rows,
    ``2 (S + Q) A_b``, and its backward ``2 R (2 A_b - a_b0)`` (R = S + Q rows in second order, Q in first);
    the last layer's inner loop ``4 S a_L`` per step; the query pass ``6 Q a_L`` (forward, weight and input
    gradients); second order ``8 S a_L`` per step (the features are differentiable too);
  * Reptile: T steps of forward and backward on the N = S + Q rows, ``T (2 N A + 2 N (2 A - a_0))``; its
    Adam update is element-wise (memory-bound: compare its bytes with the copy bandwidth, not with the peak).

  The textbook per-episode loops execute exactly these counts (tests/test_bench_scripts.py checks it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode


def _layer_sizes(dims: Sequence[int]) -> list[int]:
    return [i * o for i, o in zip(dims[:-1], dims[1:], strict=True)]


def maml_dense_flops(dims: Sequence[int], support: int, query: int, steps: int, second_order: bool) -> int:
    """Matmul FLOPs of one task's meta-gradient in the dense formulation (dims = [D, hidden..., W])."""
    a = _layer_sizes(dims)
    total, a0 = sum(a), a[0]
    inner = steps * (2 * support * total + 2 * support * (2 * total - a0))
    outer = 2 * query * total + 2 * query * (2 * total - a0)
    second = steps * 4 * support * (3 * total - 2 * a0) if second_order else 0
    return inner + outer + second


def anil_dense_flops(dims: Sequence[int], support: int, query: int, steps: int, second_order: bool) -> int:
    """Matmul FLOPs of one task's ANIL meta-gradient (dims = [D, hidden..., W]; at least one hidden layer)."""
    a = _layer_sizes(dims)
    body, last = a[:-1], a[-1]
    rows_back = support + query if second_order else query
    flops = 2 * (support + query) * sum(body) + steps * 4 * support * last + 6 * query * last
    flops += 2 * rows_back * (2 * sum(body) - body[0])
    return flops + (steps * 8 * support * last if second_order else 0)


def reptile_dense_flops(dims: Sequence[int], rows: int, steps: int) -> int:
    """Matmul FLOPs of one task's Reptile inner loop (``rows`` = support + query rows per step)."""
    a = _layer_sizes(dims)
    return steps * (2 * rows * sum(a) + 2 * rows * (2 * sum(a) - a[0]))


def counted_flops(fn: Callable[[], object]) -> int:
    """Matmul FLOPs ``fn()`` executes (forward and backward), by ``FlopCounterMode``."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def best_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """The fastest of ``repeats`` timed calls (after ``warmup`` untimed ones): the least disturbed by other
    processes on a shared machine."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a large fp32 matrix multiply (n x n by n x n) on the current threads, best of ``repeats``."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    seconds = best_seconds(lambda: torch.mm(a, b, out=out), repeats)
    return 2 * n**3 / seconds / 1e9


def copy_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
    """GB/s moved by a large tensor copy (read + write), best of ``repeats``."""
    src = torch.randn(megabytes * 2**20 // 4)
    dst = torch.empty_like(src)
    seconds = best_seconds(lambda: dst.copy_(src), repeats)
    return 2 * src.numel() * 4 / seconds / 1e9


def roofs(threads: int) -> dict:
    """The two roofs, measured now on ``threads`` threads."""
    torch.set_num_threads(threads)
    return {"threads": threads, "matmul_peak_gflops": round(matmul_peak(), 1),
            "copy_bandwidth_gbs": round(copy_bandwidth(), 1)}
