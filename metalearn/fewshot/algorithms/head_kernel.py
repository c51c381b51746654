"""The CPU kernel of :func:`.finetune_fast.train`: a linear head's full-batch Adam steps, one episode at a time.

Why a kernel: a linear head is thin (W = 2 rows in a binary trial), so each of a step's two products reads every
support float for W multiply-adds; BLAS's batched products run them far below the matmul peak, and each of the
step's seven small torch operations (two products, the bias sum, the log-softmax and its backward, the adds,
the fused Adam) makes one more pass over a chunk of episodes. Here one episode's 100 steps run back to back with
its support rows in L2 and its head, gradient and moments in L1, the products blocked four rows by two classes
(eight accumulators a load of four rows feeds), the log-softmax backward and Adam fused into the same loop.
No library offers this (torch's fused kernels stop at one operation; ``torch.compile`` lowers the products to
the same BLAS calls), so it is written with numba, which compiles it for the machine it runs on (AVX2 here).

Same math as the torch loop in ``train``, to float32 rounding, not to the bit: sums run in another order
(vector lanes, fused multiply-adds), so after 30 steps its heads lie within a few times the torch loop's own
distance from a float64 run (tests/test_head_kernel.py); a trial whose model selection sits on a tie can pick
another checkpoint, as it can between two BLAS builds. Adam's step-dependent factors are computed in float64, as
torch's fused Adam does. NaN and inf propagate as in torch (no ``nnan`` or ``ninf`` fast-math flags).
``finetune_fast`` imports this module (and numba, about 1 s) on first use, so importing the package stays as fast
as before; the first call on a machine compiles (about 9 s here) and caches the machine code beside this file
(numba's ``cache=True``; later processes load it in about 1 s).
"""

from __future__ import annotations

import numba
import numpy as np
from torch import Tensor

FASTMATH = {"reassoc", "contract", "nsz"}  # reorder sums and fuse multiply-adds; keep NaN/inf semantics
jit = numba.njit(fastmath=FASTMATH, error_model="numpy", boundscheck=False, nogil=True, cache=True)


def train(sx: Tensor, d_logp: Tensor, w: Tensor, b: Tensor, steps: int, slots: list[int], saved: Tensor,
          adam: tuple[float, float, float, float, float]) -> None:
    """``steps`` Adam steps on heads w [E, W, D] and b [E, W] (both updated in place) from support rows
    sx [E, S, D] and d_logp [E, S, W] (the mean cross-entropy's gradient in the log-probabilities, 0 on padded
    rows); after step t (t = 0: the initial heads) with ``slots[t] >= 0``, ``[w; b]`` is written to
    ``saved[:, slots[t]]`` ([E, C, W, D + 1]). ``adam``: (lr, beta1, beta2, eps, weight_decay), the L2 added to
    the gradient as ``torch.optim.Adam`` does."""
    x, dl, wn, bn, out = (t.detach().numpy() for t in (sx.contiguous(), d_logp.contiguous(), w, b, saved))
    lr, beta1, beta2, eps, decay = adam
    t = np.arange(1, steps + 1, dtype=np.float64)  # the step-dependent factors in float64, as torch's fused Adam
    step_size = np.concatenate([[0.0], lr / (1 - beta1 ** t)]).astype(np.float32)
    root = np.concatenate([[1.0], np.sqrt(1 - beta2 ** t)]).astype(np.float32)
    factors = np.float32([beta1, 1 - beta1, beta2, 1 - beta2, eps, decay])
    _train(x, dl, wn, bn, steps, np.asarray(slots, dtype=np.int64), out, step_size, root, factors)


@jit
def _train(sx, d_logp, w, b, steps, slots, saved, step_size, root, factors):  # noqa: ANN001, ANN202
    """``train`` on numpy views (shapes as there); step_size [steps + 1] and root [steps + 1] (Adam's bias
    corrections per step), factors: beta1, 1 - beta1, beta2, 1 - beta2, eps, weight decay (float32 each)."""
    e_count, s_count, dim = sx.shape
    ways = w.shape[1]
    logits = np.empty((ways, s_count), np.float32)
    g = np.empty((ways, s_count), np.float32)
    grad = np.empty((ways + 1, dim), np.float32)  # the last row: scratch for an odd class count's pair
    gb = np.empty((1, ways), np.float32)
    m, v = np.empty((ways, dim), np.float32), np.empty((ways, dim), np.float32)
    mb, vb = np.empty((1, ways), np.float32), np.empty((1, ways), np.float32)
    for e in range(e_count):
        x, we, be, dl = sx[e], w[e], b[e:e + 1], d_logp[e]
        m[:] = 0
        v[:] = 0
        mb[:] = 0
        vb[:] = 0
        for t in range(steps + 1):
            if t > 0:
                for k in range(0, ways, 2):
                    k1 = min(k + 1, ways - 1)  # an odd count's last class pairs with itself
                    _logits_pair(x, we[k], we[k1], logits[k], logits[k1], s_count, dim)
                for s in range(s_count):  # + bias, log_softmax, then its backward (as torch's kernels compute)
                    for k in range(ways):
                        logits[k, s] += be[0, k]
                    top = logits[0, s]
                    for k in range(1, ways):
                        top = max(top, logits[k, s])
                    total = np.float32(0.0)
                    for k in range(ways):
                        total += np.exp(logits[k, s] - top)
                    shift = top + np.log(total)
                    upstream = np.float32(0.0)
                    for k in range(ways):
                        upstream += dl[s, k]
                    for k in range(ways):
                        g[k, s] = dl[s, k] - np.exp(logits[k, s] - shift) * upstream
                for k in range(0, ways, 2):
                    k1 = k + 1 if k + 1 < ways else ways  # an odd count's last class: the pair's second is scratch
                    _grad_pair(x, g[k], g[min(k1, ways - 1)], grad[k], grad[k1], s_count, dim)
                for k in range(ways):
                    total = np.float32(0.0)
                    for s in range(s_count):
                        total += g[k, s]
                    gb[0, k] = total
                _adam_rows(we, grad, m, v, ways, dim, step_size[t], root[t], factors)
                _adam_rows(be, gb, mb, vb, 1, ways, step_size[t], root[t], factors)
            slot = slots[t]
            if slot >= 0:
                for k in range(ways):
                    saved[e, slot, k, :dim] = we[k]
                    saved[e, slot, k, dim] = be[0, k]


@jit
def _logits_pair(x, w0, w1, out0, out1, s_count, dim):  # noqa: ANN001, ANN202
    """out0[s] = w0 . x[s], out1[s] = w1 . x[s] for rows x [S, D]: four rows at a time (eight accumulators,
    each load of w0[d], w1[d] feeds four rows)."""
    s = 0
    while s + 4 <= s_count:
        a0 = a1 = a2 = a3 = c0 = c1 = c2 = c3 = np.float32(0.0)
        for d in range(dim):
            u, q = w0[d], w1[d]
            x0, x1, x2, x3 = x[s, d], x[s + 1, d], x[s + 2, d], x[s + 3, d]
            a0 += u * x0
            a1 += u * x1
            a2 += u * x2
            a3 += u * x3
            c0 += q * x0
            c1 += q * x1
            c2 += q * x2
            c3 += q * x3
        out0[s], out0[s + 1], out0[s + 2], out0[s + 3] = a0, a1, a2, a3
        out1[s], out1[s + 1], out1[s + 2], out1[s + 3] = c0, c1, c2, c3
        s += 4
    while s < s_count:
        a0 = c0 = np.float32(0.0)
        for d in range(dim):
            a0 += w0[d] * x[s, d]
            c0 += w1[d] * x[s, d]
        out0[s], out1[s] = a0, c0
        s += 1


@jit
def _grad_pair(x, g0, g1, out0, out1, s_count, dim):  # noqa: ANN001, ANN202
    """out0 = g0 x, out1 = g1 x (g [S], rows x [S, D]): four rows folded into each pass over the outputs."""
    for d in range(dim):
        out0[d] = np.float32(0.0)
        out1[d] = np.float32(0.0)
    s = 0
    while s + 4 <= s_count:
        u0, u1, u2, u3 = g0[s], g0[s + 1], g0[s + 2], g0[s + 3]
        q0, q1, q2, q3 = g1[s], g1[s + 1], g1[s + 2], g1[s + 3]
        for d in range(dim):
            x0, x1, x2, x3 = x[s, d], x[s + 1, d], x[s + 2, d], x[s + 3, d]
            out0[d] += u0 * x0 + u1 * x1 + u2 * x2 + u3 * x3
            out1[d] += q0 * x0 + q1 * x1 + q2 * x2 + q3 * x3
        s += 4
    while s < s_count:
        u0, q0 = g0[s], g1[s]
        for d in range(dim):
            out0[d] += u0 * x[s, d]
            out1[d] += q0 * x[s, d]
        s += 1


@jit
def _adam_rows(p, g, m, v, rows, dim, step_size, root, factors):  # noqa: ANN001, ANN202
    """Adam on p [rows, D] in place (m, v: its moments; g: its gradient), as torch's fused Adam: the L2 term
    added to the gradient, p -= step_size m / (sqrt(v) / root + eps) (factors as in ``_train``)."""
    beta1, keep1, beta2, keep2, eps, decay = factors[0], factors[1], factors[2], factors[3], factors[4], factors[5]
    for r in range(rows):
        for d in range(dim):
            grad = g[r, d] + decay * p[r, d]
            mean = beta1 * m[r, d] + keep1 * grad
            var = beta2 * v[r, d] + keep2 * grad * grad
            m[r, d], v[r, d] = mean, var
            p[r, d] -= step_size * mean / (np.sqrt(var) / root + eps)
