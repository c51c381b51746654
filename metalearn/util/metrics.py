"""Classification metrics batched over episodes, with padding masks.

Shapes: E episodes, Q query items (padded to a common size), W ways. Every metric comes from the per-episode
confusion matrix ``C[e, t, p]`` = number of real query items of true class t predicted as p.

Conventions (those of scikit-learn's defaults, ``labels`` = the classes seen in the truth or the prediction):
- per-class F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (support + predicted); it is 0 when TP = 0 (sklearn's
  ``zero_division=0``);
- macro-F1 = mean of per-class F1 over the classes *present* in the episode, i.e. with support + predicted > 0:
  a class absent from both the truth and the prediction is left out of the mean (``f1_score(average="macro")``
  with its default ``labels``); a class predicted but never true counts with F1 = 0;
- weighted-F1 = per-class F1 averaged with weights = true support (classes absent from the truth weigh 0);
- UAR (unweighted average recall, ``balanced_accuracy_score``) = mean recall over classes present in the truth;
- an episode with no real query item gets NaN for every metric.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def confusion(pred: Tensor, y: Tensor, mask: Tensor | None, ways: int) -> Tensor:
    """Confusion counts per episode.

    Args:
        pred: [E, Q] predicted class ids; y: [E, Q] true class ids (any value where ``mask`` is False);
        mask: [E, Q] bool, True for real items (None: ``y >= 0``, i.e. padding labelled -1).
    Returns:
        [E, W, W] float counts, rows = truth, columns = prediction.
    """
    if mask is None:
        mask = y >= 0
    for name, ids in (("labels", y), ("predictions", pred)):
        outside = mask & ((ids < 0) | (ids >= ways))
        if bool(outside.any()):
            raise ValueError(f"confusion: {name} must be class ids in [0, {ways}), got {int(ids[outside][0])}")
    e = pred.shape[0]
    episode = torch.arange(e, device=pred.device).unsqueeze(-1)
    cells = torch.where(mask, (episode * ways + y.long()) * ways + pred.long(), e * ways * ways)  # padding: a spare bin
    counts = torch.bincount(cells.reshape(-1), minlength=e * ways * ways + 1)[:-1]
    return counts.view(e, ways, ways).to(torch.float64)  # one count per (episode, truth, prediction)


def _counts(conf: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(tp, support, predicted, total): [E, W], [E, W], [E, W], [E] from confusion [E, W, W]."""
    tp = torch.diagonal(conf, dim1=-2, dim2=-1)
    support = conf.sum(-1)
    predicted = conf.sum(-2)
    return tp, support, predicted, support.sum(-1)


def _nan_where_empty(values: Tensor, total: Tensor) -> Tensor:
    return torch.where(total > 0, values, torch.full_like(values, math.nan))  # float64: exact for selection


def accuracy_from_confusion(conf: Tensor) -> Tensor:
    """[E, W, W] -> [E] fraction of real items predicted correctly."""
    tp, _, _, total = _counts(conf)
    return _nan_where_empty(tp.sum(-1) / total.clamp_min(1), total)


def per_class_f1(conf: Tensor) -> Tensor:
    """[E, W, W] -> [E, W] F1 of every class (0 where the class is neither true nor predicted)."""
    tp, support, predicted, _ = _counts(conf)
    return 2 * tp / (support + predicted).clamp_min(1)


def macro_f1_from_confusion(conf: Tensor) -> Tensor:
    """[E, W, W] -> [E] mean F1 over classes present in the truth or the prediction."""
    _, support, predicted, total = _counts(conf)
    present = ((support + predicted) > 0).to(conf.dtype)
    f1 = (per_class_f1(conf) * present).sum(-1) / present.sum(-1).clamp_min(1)
    return _nan_where_empty(f1, total)


def weighted_f1_from_confusion(conf: Tensor) -> Tensor:
    """[E, W, W] -> [E] per-class F1 weighted by true support."""
    _, support, _, total = _counts(conf)
    f1 = (per_class_f1(conf) * support).sum(-1) / total.clamp_min(1)
    return _nan_where_empty(f1, total)


def uar_from_confusion(conf: Tensor) -> Tensor:
    """[E, W, W] -> [E] mean recall over classes present in the truth."""
    tp, support, _, total = _counts(conf)
    present = (support > 0).to(conf.dtype)
    recall = tp / support.clamp_min(1)
    return _nan_where_empty((recall * present).sum(-1) / present.sum(-1).clamp_min(1), total)


def accuracy(pred: Tensor, y: Tensor, mask: Tensor | None, ways: int) -> Tensor:
    """pred, y, mask: [E, Q] -> [E]."""
    return accuracy_from_confusion(confusion(pred, y, mask, ways))


def macro_f1(pred: Tensor, y: Tensor, mask: Tensor | None, ways: int) -> Tensor:
    """pred, y, mask: [E, Q] -> [E]."""
    return macro_f1_from_confusion(confusion(pred, y, mask, ways))


def weighted_f1(pred: Tensor, y: Tensor, mask: Tensor | None, ways: int) -> Tensor:
    """pred, y, mask: [E, Q] -> [E]."""
    return weighted_f1_from_confusion(confusion(pred, y, mask, ways))


def uar(pred: Tensor, y: Tensor, mask: Tensor | None, ways: int) -> Tensor:
    """pred, y, mask: [E, Q] -> [E]."""
    return uar_from_confusion(confusion(pred, y, mask, ways))


def episode_metrics(logits: Tensor, y: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
    """All four metrics of a trial record from logits [E, Q, W] and labels [E, Q]; each value [E]."""
    conf = confusion(logits.argmax(-1), y, mask, logits.shape[-1])
    return {
        "accuracy": accuracy_from_confusion(conf),
        "macro_f1": macro_f1_from_confusion(conf),
        "weighted_f1": weighted_f1_from_confusion(conf),
        "uar": uar_from_confusion(conf),
    }
