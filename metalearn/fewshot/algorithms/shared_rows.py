"""Linear heads' logits over rows that many episodes share, from one product per distinct row set.

A speaker's episodes in a grid share their validation and query rows (every k and repetition of one target
reads the same clips), but each episode standardises them on its own support set, so gathered per episode they
are a few hundred rows copied, shifted and scaled per trial, then multiplied by a handful of head rows: thin
products over freshly written rows. The standardisation folds into the heads instead,

    ((x - m) / s) . w + b  =  (x - c) . (w / s)  +  b - ((m - c) / s) . w,

so the episodes reading one row set multiply its rows once, all their heads at once (a product with many
columns, which BLAS runs near its peak), and each episode keeps its own bias; row sets read by equally many
episodes (every speaker's in a grid batch of one k) go through one batched product, not a loop of products.

``c`` is a constant any value of which gives the same logits in exact arithmetic: the row set's mean, so both
terms stay at the scale of the rows' spread, as the standardised rows are, instead of the features' offset
(``x . (w / s) - m . (w / s)`` would cancel two large numbers: at an offset of 3 the logits' error to float64 was
3.7x the per-episode path's, centred 1.0x; tests/test_shared_rows.py), or 0 where the episodes subtract no mean
(``standardize = none``: the plain product).
"""

from __future__ import annotations

import torch
from torch import Tensor

from metalearn.fewshot.algorithms.rows import RowIndex

ROW_FLOATS = 1 << 22  # floats of row sets gathered for one batched product (16 MiB: a grid batch's 20 speakers'
# 150 query rows at D = 768 in one; episodes that each read their own rows never gather a batch-sized copy)


def shared_logits(heads: Tensor, x: RowIndex, first: int, mean: Tensor, scale: Tensor) -> Tensor:
    """Logits [e, R, H] of episodes first .. first + e - 1's rows ``x`` (padding read as zeros, as
    :meth:`RowIndex.dense` gives them) standardised as ``(x - mean) / scale``, under heads = [weight; bias]^T
    [e, H, D + 1]. mean, scale: [E, 1, D] for every episode of ``x``; a scale expanded from one number per
    episode (``standardize = global``) divides the logits instead of the weights. Row sets read by the same
    number of episodes (all of a grid batch's, usually) are multiplied in one batched product, up to
    ``ROW_FLOATS`` of rows at a time."""
    e, h, d1 = heads.shape
    d = d1 - 1
    idx, mask = x.index[first:first + e], x.mask[first:first + e]
    keys, group = torch.unique(idx.masked_fill(~mask, -1), dim=0, return_inverse=True)  # [U, R], [e]
    mean, scale = mean[first:first + e], scale[first:first + e]
    one_number = scale.stride(-1) == 0  # (x - m) / s . w = ((x - m) . w) / s
    order = torch.argsort(group, stable=True)  # episodes by row set: each set's members side by side
    count = torch.bincount(group, minlength=len(keys))  # [U]
    ends = count.cumsum(0)
    out = heads.new_empty(e, idx.shape[1], h)
    per_product = max(1, ROW_FLOATS // max(idx.shape[1] * d, 1))  # row sets gathered for one product
    products = [(readers, part) for readers in count.unique().tolist()  # row sets read by as many episodes
                for part in torch.nonzero(count == readers).squeeze(1).split(per_product)]
    for n, sets in products:  # n episodes read each of the row sets ``sets`` [u]
        members = order[(ends[sets] - n).unsqueeze(1) + torch.arange(n, device=order.device)].view(-1)  # [u n]
        rows, centre = _centred(x.table, keys[sets], bool(mean[members].any()))  # [u, R, D], [u, 1, D]
        w, s, m = heads[members, :, :d], scale[members], mean[members]  # [u n, H, D], [u n, 1, D] twice
        w = w if one_number else w / s
        shift = m - centre.repeat_interleave(n, 0)  # (m - c) [u n, 1, D]
        shift = shift / s if one_number else shift
        logits = torch.bmm(rows, w.view(len(sets), n * h, d).transpose(1, 2))  # [u, R, n H]
        logits = logits.view(len(sets), -1, n, h).transpose(1, 2).reshape(-1, idx.shape[1], h)  # [u n, R, H]
        if one_number:
            logits = logits / s[:, :, :1]
        out[members] = logits + (heads[members, :, d:] - torch.bmm(w, shift.transpose(1, 2))).transpose(1, 2)
    return out


def _centred(table: Tensor, keys: Tensor, centre: bool) -> tuple[Tensor, Tensor]:
    """The rows ``table[keys]`` [U, R, D] of U row sets (a zero row where a key < 0: padding), each set minus its
    real rows' mean, and those means [U, 1, D]; with ``centre`` False (the episodes subtract no mean) the rows as
    they are and 0."""
    real = keys >= 0
    rows = RowIndex(table, keys.clamp_min(0), real).dense()
    if not centre:
        return rows, rows.new_zeros(len(keys), 1, rows.shape[-1])
    mean = rows.sum(1, keepdim=True) / real.sum(1).clamp_min(1).to(rows.dtype).view(-1, 1, 1)  # padding adds 0
    return rows.sub_(mean), mean  # padding too: (0 - c) . w + the shift is a zero row's logit
