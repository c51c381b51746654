"""A compiled CPU kernel for two-class linear heads (``FinetuneConfig.kernel = "numba"``): one episode's full-batch
Adam steps back to back, the math of :func:`.finetune_fast.train_two_classes`.

Why a kernel: a two-class head trains one weight row, so each of a step's two products reads every support float
for one multiply-add; torch's batched products run such products far below the matmul peak (memory-bound over a
cache-sized chunk of episodes), and each of the step's small operations makes one more pass over that chunk. Here
one episode's steps run with its support rows in L2 and its weight row, gradient and moments in L1: the logit
differences four rows at a time, the loss gradient (one exponential per row), class 0's weight gradient (four
rows folded into each pass over it) and Adam in one loop. No library offers this (torch's fused kernels stop at
one operation; ``torch.compile`` lowers the products to the same BLAS calls), so it is written with numba, which
compiles it for the machine it runs on. Each pass over the support runs near the L2 read rate (95 GB/s alone
here); a step's two passes, its exponentials and Adam's square roots and divisions share the rest.

Same math as the torch path to float32 rounding, not to the bit: sums run in another order (vector lanes, fused
multiply-adds), so a trial whose model selection sits on a tie can pick another checkpoint, as between two BLAS
builds; which path made a run's records is therefore part of its config (``finetune.kernel``). Adam's
step-dependent factors are computed in float64, as torch's fused Adam does. NaN and inf propagate as in torch (no
``nnan`` or ``ninf`` fast-math flags). This module (and numba) is imported on first use only; the first call on a
machine compiles the kernel and caches the machine code beside this file (numba's ``cache=True``): 3.2 s here
with numba's import, 0.8 s for a later process that loads it.
"""

from __future__ import annotations

import numba
import numpy as np
from torch import Tensor

FASTMATH = {"reassoc", "contract", "nsz"}  # reorder sums and fuse multiply-adds; keep NaN/inf semantics
jit = numba.njit(fastmath=FASTMATH, error_model="numpy", boundscheck=False, nogil=True, cache=True)


def train_two_classes(sx: Tensor, share: Tensor, labelled: Tensor, w: Tensor, total: Tensor, b: Tensor,
                      steps: int, slots: list[int], saved: Tensor, adam: tuple[float, float, float, float, float]
                      ) -> None:
    """``steps`` Adam steps on two-class heads from support rows sx [E, S, D]: class 0's weight row w [E, D] and
    the biases b [E, 2] are updated in place, class 1's row is ``total - w`` (total [E, D], constant).
    share [E, S]: each row's weight in the mean loss (0: padding); labelled [E, 2, S]: share where the row's label
    is class c. After step t (t = 0: the initial heads) with ``slots[t] >= 0`` both heads ``[w_c; b_c]`` are
    written to ``saved[:, slots[t]]`` ([E, C, 2, D + 1]). ``adam``: (lr, beta1, beta2, eps, weight_decay), the
    L2 added to the gradient as ``torch.optim.Adam`` does (the caller keeps the rows opposite when it is used)."""
    x, sh, lab, tot = (t.detach().contiguous().numpy() for t in (sx, share, labelled, total))
    wn, bn, out = (t.detach().numpy() for t in (w, b, saved))
    lr, beta1, beta2, eps, decay = adam
    t = np.arange(1, steps + 1, dtype=np.float64)  # the step-dependent factors in float64, as torch's fused Adam
    step_size = np.concatenate([[0.0], lr / (1 - beta1 ** t)]).astype(np.float32)
    root = np.concatenate([[1.0], np.sqrt(1 - beta2 ** t)]).astype(np.float32)
    factors = np.float32([beta1, 1 - beta1, beta2, 1 - beta2, eps, decay])
    _train(x, sh, lab, wn, tot, bn, steps, np.asarray(slots, dtype=np.int64), out, step_size, root, factors)


@jit
def _train(sx, share, labelled, w, total, b, steps, slots, saved, step_size, root, factors):  # noqa: ANN001, ANN202
    """``train_two_classes`` on numpy views (shapes as there); step_size [steps + 1] and root [steps + 1] (Adam's
    bias corrections per step), factors: beta1, 1 - beta1, beta2, 1 - beta2, eps, weight decay (float32 each)."""
    e_count, s_count, dim = sx.shape
    base = np.empty(s_count, np.float32)  # (w0 + w1) . x_s, constant
    g0, g1 = np.empty(s_count, np.float32), np.empty(s_count, np.float32)
    grad = np.empty(dim, np.float32)
    gb = np.empty(2, np.float32)
    m, v = np.empty(dim, np.float32), np.empty(dim, np.float32)
    mb, vb = np.empty(2, np.float32), np.empty(2, np.float32)
    for e in range(e_count):
        x, we, be, tote = sx[e], w[e], b[e], total[e]
        _dots(x, tote, base, s_count, dim)
        m[:] = 0
        v[:] = 0
        mb[:] = 0
        vb[:] = 0
        for t in range(steps + 1):
            if t > 0:
                _dots(x, we, g0, s_count, dim)  # w0 . x_s
                shift = be[0] - be[1]
                for s in range(s_count):  # -z = 2 w0 x - (w0 + w1) x + b0 - b1; g_c = share (p_c - [y = c])
                    nz = np.float32(2.0) * g0[s] + shift - base[s]
                    # one exponential per row (two cost 10% more kernel time at the grid's shapes), never overflowing:
                    # sigmoid(|nz|) = 1 / (1 + small), sigmoid(-|nz|) = small / (1 + small)
                    small = np.exp(-abs(nz))
                    near = share[e, s] / (np.float32(1.0) + small)
                    if nz >= 0:
                        g0[s], g1[s] = near - labelled[e, 0, s], small * near - labelled[e, 1, s]
                    else:
                        g0[s], g1[s] = small * near - labelled[e, 0, s], near - labelled[e, 1, s]
                _weighted_sum(x, g0, grad, s_count, dim)
                total0 = total1 = np.float32(0.0)
                for s in range(s_count):
                    total0 += g0[s]
                    total1 += g1[s]
                gb[0], gb[1] = total0, total1
                _adam(we, grad, m, v, dim, step_size[t], root[t], factors)
                _adam(be, gb, mb, vb, 2, step_size[t], root[t], factors)
            slot = slots[t]
            if slot >= 0:
                for d in range(dim):
                    saved[e, slot, 0, d] = we[d]
                    saved[e, slot, 1, d] = tote[d] - we[d]
                saved[e, slot, 0, dim] = be[0]
                saved[e, slot, 1, dim] = be[1]


@jit
def _dots(x, w, out, s_count, dim):  # noqa: ANN001, ANN202
    """out[s] = w . x[s] for rows x [S, D]: four rows at a time (each load of w[d] feeds four accumulators)."""
    s = 0
    while s + 4 <= s_count:
        a0 = a1 = a2 = a3 = np.float32(0.0)
        for d in range(dim):
            u = w[d]
            a0 += u * x[s, d]
            a1 += u * x[s + 1, d]
            a2 += u * x[s + 2, d]
            a3 += u * x[s + 3, d]
        out[s], out[s + 1], out[s + 2], out[s + 3] = a0, a1, a2, a3
        s += 4
    while s < s_count:
        a0 = np.float32(0.0)
        for d in range(dim):
            a0 += w[d] * x[s, d]
        out[s] = a0
        s += 1


@jit
def _weighted_sum(x, g, out, s_count, dim):  # noqa: ANN001, ANN202
    """out = g x = sum_s g[s] x[s] (g [S], rows x [S, D]): four rows folded into each pass over ``out``."""
    for d in range(dim):
        out[d] = np.float32(0.0)
    s = 0
    while s + 4 <= s_count:
        u0, u1, u2, u3 = g[s], g[s + 1], g[s + 2], g[s + 3]
        for d in range(dim):
            out[d] += u0 * x[s, d] + u1 * x[s + 1, d] + u2 * x[s + 2, d] + u3 * x[s + 3, d]
        s += 4
    while s < s_count:
        u0 = g[s]
        for d in range(dim):
            out[d] += u0 * x[s, d]
        s += 1


@jit
def _adam(p, grad, m, v, n, step_size, root, factors):  # noqa: ANN001, ANN202
    """torch's fused Adam on p [n] in place: grad + decay p, the moments, p -= step_size m / (sqrt(v) / root + eps)."""
    beta1, one_minus_beta1, beta2, one_minus_beta2, eps, decay = (factors[0], factors[1], factors[2], factors[3],
                                                                 factors[4], factors[5])
    for i in range(n):
        gi = grad[i] + decay * p[i]
        m[i] = beta1 * m[i] + one_minus_beta1 * gi
        v[i] = beta2 * v[i] + one_minus_beta2 * gi * gi
        p[i] -= step_size * m[i] / (np.sqrt(v[i]) / root + eps)
