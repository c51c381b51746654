"""Batched episode metrics against scikit-learn-style NumPy references written out here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metalearn.util.metrics import accuracy, confusion, episode_metrics, macro_f1, uar, weighted_f1


def _reference(y_true: list[int], y_pred: list[int]) -> dict[str, float]:
    """sklearn's defaults: labels = sorted classes in truth or prediction, zero_division = 0."""
    labels = sorted(set(y_true) | set(y_pred))
    yt, yp = np.array(y_true), np.array(y_pred)
    f1s, supports, recalls = [], [], []
    for c in labels:
        tp = int(np.sum((yt == c) & (yp == c)))
        fp = int(np.sum((yt != c) & (yp == c)))
        fn = int(np.sum((yt == c) & (yp != c)))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
        supports.append(tp + fn)
        if tp + fn:
            recalls.append(recall)
    return {
        "accuracy": float(np.mean(yt == yp)),
        "macro_f1": float(np.mean(f1s)),
        "weighted_f1": float(np.dot(f1s, supports) / np.sum(supports)),
        "uar": float(np.mean(recalls)),
    }


def _random_padded(seed: int, episodes: int = 60, q: int = 12, ways: int = 5):
    """Labels drawn from a random subset of classes per episode (absent classes), rows padded with junk."""
    rng = np.random.default_rng(seed)
    y = np.zeros((episodes, q), np.int64)
    pred = np.zeros((episodes, q), np.int64)
    mask = np.zeros((episodes, q), bool)
    for e in range(episodes):
        n = rng.integers(1, q + 1)
        classes = rng.choice(ways, size=rng.integers(1, ways + 1), replace=False)
        y[e, :n] = rng.choice(classes, size=n)
        pred[e, :n] = np.where(rng.random(n) < 0.6, y[e, :n], rng.integers(0, ways, n))
        y[e, n:] = rng.choice([-1, 0, ways - 1], size=q - n)  # junk in padding, sometimes valid-looking
        pred[e, n:] = rng.integers(0, ways, q - n)
        mask[e, :n] = True
    return torch.from_numpy(pred), torch.from_numpy(y), torch.from_numpy(mask), ways


def test_confusion_counts_match_loop() -> None:
    pred, y, mask, ways = _random_padded(0)
    conf = confusion(pred, y, mask, ways)
    assert conf.shape == (pred.shape[0], ways, ways)
    expected = np.zeros((pred.shape[0], ways, ways))
    for e in range(pred.shape[0]):
        for q in range(pred.shape[1]):
            if mask[e, q]:
                expected[e, y[e, q], pred[e, q]] += 1
    np.testing.assert_array_equal(conf.numpy(), expected)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_metrics_match_sklearn_style_reference(seed: int) -> None:
    pred, y, mask, ways = _random_padded(seed)
    got = {
        "accuracy": accuracy(pred, y, mask, ways),
        "macro_f1": macro_f1(pred, y, mask, ways),
        "weighted_f1": weighted_f1(pred, y, mask, ways),
        "uar": uar(pred, y, mask, ways),
    }
    for e in range(pred.shape[0]):
        m = mask[e].numpy()
        ref = _reference(y[e].numpy()[m].tolist(), pred[e].numpy()[m].tolist())
        for key, value in ref.items():
            assert got[key][e].item() == pytest.approx(value, abs=1e-6), (key, e)


def test_absent_classes_are_left_out_of_the_macro_mean() -> None:
    # 4 ways, classes 2 and 3 neither true nor predicted: mean over classes {0, 1} only.
    pred = torch.tensor([[0, 0, 1, 0]])
    y = torch.tensor([[0, 0, 1, 1]])
    assert macro_f1(pred, y, None, 4).item() == pytest.approx((0.8 + 2 / 3) / 2)
    # a class predicted but never true counts with F1 = 0 in macro-F1, not in UAR
    pred, y = torch.tensor([[0, 1]]), torch.tensor([[0, 0]])
    assert macro_f1(pred, y, None, 3).item() == pytest.approx((2 / 3 + 0) / 2)
    assert uar(pred, y, None, 3).item() == pytest.approx(0.5)
    assert weighted_f1(pred, y, None, 3).item() == pytest.approx(2 / 3)


def test_padding_is_ignored_and_empty_episode_is_nan() -> None:
    y = torch.tensor([[1, 0, -1, -1], [-1, -1, -1, -1]])
    pred = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]])
    out = episode_metrics(torch.nn.functional.one_hot(pred, 2).float(), y)  # mask defaults to y >= 0
    assert out["accuracy"][0].item() == pytest.approx(0.5)
    assert out["uar"][0].item() == pytest.approx(0.5)
    assert all(math.isnan(v[1].item()) for v in out.values())
    assert all(v.shape == (2,) and v.dtype == torch.float64 for v in out.values())


def test_class_ids_out_of_range_are_refused_not_counted_in_another_cell() -> None:
    """Counts are cells of one flat histogram, so an id out of range would land in a neighbour's cell."""
    y, pred = torch.tensor([[0, 1, 3]]), torch.tensor([[0, 1, 1]])
    with pytest.raises(ValueError, match=r"labels must be class ids in \[0, 3\), got 3"):
        confusion(pred, y, None, 3)
    with pytest.raises(ValueError, match="predictions must be class ids"):
        confusion(torch.tensor([[0, -1]]), torch.tensor([[0, 1]]), None, 2)
    assert confusion(pred, torch.tensor([[0, 1, -1]]), None, 3).sum() == 2  # padding (-1) is not counted
