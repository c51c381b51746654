"""Linear heads' logits over rows that many episodes share, from one product per distinct row set.

A speaker's episodes in a grid share their validation and query rows (every k and repetition of one target
reads the same clips), but each episode standardises them on its own support set, so gathered per episode they
are a few hundred rows copied, shifted and scaled per trial, then multiplied by a handful of head rows: thin
products over freshly written rows. The standardisation folds into the heads instead,

    ((x - m) / s) . w + b  =  (x - c) . (w / s)  +  b - ((m - c) / s) . w,

so the episodes reading one row set multiply its rows once, all their heads at once (a product with many
columns, which BLAS runs near its peak), and each episode keeps its own bias. ``c`` is a constant any value of
which gives the same logits in exact arithmetic: the row set's mean, so both terms stay at the scale of the
rows' spread, as the standardised rows are, instead of the features' offset (``x . (w / s) - m . (w / s)``
would cancel two large numbers: at an offset of 3 the logits' error to float64 was 3.7x the per-episode
path's, centred 1.0x; tests/test_shared_rows.py), or 0 where the episodes subtract no mean
(``standardize = none``: the plain product).
"""

from __future__ import annotations

import torch
from torch import Tensor

from metalearn.fewshot.algorithms.rows import RowIndex


def shared_logits(heads: Tensor, x: RowIndex, first: int, mean: Tensor, scale: Tensor) -> Tensor:
    """Logits [e, R, H] of episodes first .. first + e - 1's rows ``x`` (padding read as zeros, as
    :meth:`RowIndex.take` gives them) standardised as ``(x - mean) / scale``, under heads = [weight; bias]^T
    [e, H, D + 1]. mean, scale: [E, 1, D] for every episode of ``x``; a scale expanded from one number per
    episode (``standardize = global``) divides the logits instead of the weights. Episodes of one row set that lie
    side by side in the batch (a speaker's, usually) read their heads in place; others are gathered."""
    e, h, d1 = heads.shape
    d = d1 - 1
    idx, mask = x.index[first:first + e], x.mask[first:first + e]
    keys, group = torch.unique(idx.masked_fill(~mask, -1), dim=0, return_inverse=True)  # [U, R], [e]
    mean, scale = mean[first:first + e], scale[first:first + e]
    one_number = scale.stride(-1) == 0  # (x - m) / s . w = ((x - m) . w) / s
    out = heads.new_empty(e, idx.shape[1], h)
    order = torch.argsort(group, stable=True)
    for u, members in enumerate(torch.split(order, torch.bincount(group, minlength=len(keys)).tolist())):
        lo, n = int(members[0]), len(members)
        sel = slice(lo, lo + n) if int(members[-1]) - lo == n - 1 else members  # ascending: a range when adjacent
        rows, centre = _centred(x.table, keys[u], bool(mean[sel].any()))
        w, s = heads[sel, :, :d], scale[sel]  # [n, H, D], [n, 1, D]
        w = w if one_number else w / s
        shift = (mean[sel] - centre) / s if one_number else mean[sel] - centre  # (m - c) [/ s] [n, 1, D]
        logits = (rows @ w.reshape(-1, d).T).view(-1, n, h).transpose(0, 1)  # [n, R, H]
        if one_number:
            logits = logits / s[:, :, :1]
        out[sel] = logits + (heads[sel, :, d:] - torch.bmm(w, shift.transpose(1, 2))).transpose(1, 2)
    return out


def _centred(table: Tensor, key: Tensor, centre: bool) -> tuple[Tensor, Tensor]:
    """The rows ``table[key]`` [R, D] (a zero row where key < 0: padding) minus their real rows' mean, and that
    mean [D]; with ``centre`` False (the episodes subtract no mean) the rows as they are and 0."""
    rows = table.index_select(0, key.clamp_min(0))
    real = key >= 0
    if not bool(real.all()):
        rows.masked_fill_(~real.unsqueeze(-1), 0)
    if not (centre and bool(real.any())):
        return rows, rows.new_zeros(rows.shape[-1])
    mean = rows.mean(0) if bool(real.all()) else rows[real].mean(0)
    return rows.sub_(mean), mean
