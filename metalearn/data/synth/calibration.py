"""Does the corpus reward speaker adaptation? A report on plain acoustic statistics.

Three classifiers on :func:`features.utterance_features`, all scored on each speaker's test split:
- speaker-independent: shrinkage LDA trained on the other speakers (leave-one-speaker-out);
- speaker-normalised: the same, after z-scoring every speaker's features with that speaker's own
  unlabelled statistics (a classic adaptation without labels);
- per-speaker k-shot: class means from k labelled examples per class of the test speaker, the
  within-class covariance from the other speakers (LDA with adapted means).
A corpus that rewards adaptation scores clearly above chance speaker-independently, and higher
again with k examples of the speaker, without reaching 100%.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import stats

from metalearn.data.audio import load_audio
from metalearn.data.manifest import Utterance
from metalearn.data.synth.features import utterance_features


def lda_fit(x: np.ndarray, y: np.ndarray, n_classes: int, shrink: float = 0.2
            ) -> tuple[np.ndarray, np.ndarray]:
    """Shrinkage LDA on ``x`` [N, D], labels ``y`` [N] in 0..C-1 -> weights [D, C], bias [C]."""
    means = np.stack([x[y == c].mean(axis=0) for c in range(n_classes)])
    return lda_from(means, within_covariance(x, y, n_classes), shrink)


def within_covariance(x: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """Pooled within-class covariance [D, D] of ``x`` [N, D] with labels ``y`` [N]."""
    centred = np.concatenate([x[y == c] - x[y == c].mean(axis=0) for c in range(n_classes) if (y == c).any()])
    return centred.T @ centred / max(len(centred) - n_classes, 1)


def lda_from(means: np.ndarray, cov: np.ndarray, shrink: float) -> tuple[np.ndarray, np.ndarray]:
    """Linear discriminant from class ``means`` [C, D] and covariance [D, D] shrunk toward its diagonal."""
    cov = (1 - shrink) * cov + shrink * np.diag(np.diag(cov)) + 1e-6 * np.eye(len(cov))
    w = np.linalg.solve(cov, means.T)
    return w, -0.5 * np.sum(means.T * w, axis=0)


def _standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mu, sd = train.mean(axis=0), train.std(axis=0) + 1e-8
    return [(a - mu) / sd for a in (train, *others)]


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """Mean and half-width of its 95% t-interval."""
    v = np.asarray(values, dtype=float)
    if v.size < 2:
        return float(v.mean()), float("nan")
    return float(v.mean()), float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))


def _leave_one_out(x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, n_classes: int
                   ) -> float:
    """Accuracy on ``test`` of shrinkage LDA fitted on ``train`` (boolean masks [N])."""
    xtr, xte = _standardise(x[train], x[test])
    w, b = lda_fit(xtr, y[train], n_classes)
    return float(np.mean(np.argmax(xte @ w + b, axis=1) == y[test]))


def _kshot(x: np.ndarray, y: np.ndarray, others: np.ndarray, pool: np.ndarray, test: np.ndarray,
           n_classes: int, k: int, repeats: int, rng: np.random.Generator) -> float | None:
    """Mean accuracy over ``repeats`` draws of k examples per class from ``pool``; None if too few."""
    candidates = [np.flatnonzero(pool & (y == c)) for c in range(n_classes)]
    if min(len(c) for c in candidates) < k:
        return None
    xtr, xte, xall = _standardise(x[others], x[test], x)
    cov = within_covariance(xtr, y[others], n_classes)
    accs = []
    for _ in range(repeats):
        means = np.stack([xall[rng.choice(c, k, replace=False)].mean(axis=0) for c in candidates])
        w, b = lda_from(means, cov, 0.2)
        accs.append(np.mean(np.argmax(xte @ w + b, axis=1) == y[test]))
    return float(np.mean(accs))


def calibrate(x: np.ndarray, y: np.ndarray, speakers: np.ndarray, splits: np.ndarray,
              ks: Sequence[int] = (1, 5, 10), repeats: int = 20, seed: int = 0) -> dict:
    """Accuracies of the three classifiers; ``x`` [N, D], ``y`` [N] ints, ``speakers``, ``splits`` [N].

    Each entry is (mean over speakers, 95% CI half-width); k-shot accuracies are first averaged
    over ``repeats`` draws per speaker.
    """
    n_classes = int(y.max()) + 1
    rng = np.random.default_rng(seed)
    normed = x.copy()
    for s in np.unique(speakers):
        normed[speakers == s] = _standardise(x[speakers == s])[0]
    has_train = (splits == "train").any()
    si, sn, kshot = [], [], {k: [] for k in ks}
    for s in np.unique(speakers):
        test = (speakers == s) & ((splits == "test") | (splits == ""))
        others = speakers != s
        si.append(_leave_one_out(x, y, others, test, n_classes))
        sn.append(_leave_one_out(normed, y, others, test, n_classes))
        pool = (speakers == s) & (splits == "train") if has_train else test
        for k in ks:
            acc = _kshot(x, y, others, pool, test, n_classes, k, repeats, rng)
            if acc is not None:
                kshot[k].append(acc)
    return {"chance": 1.0 / n_classes, "n_speakers": int(len(np.unique(speakers))), "repeats": repeats,
            "n_test_utterances": int(np.sum((splits == "test") | (splits == ""))),
            "speaker_independent": mean_ci(si), "speaker_normalised": mean_ci(sn),
            "per_speaker_kshot": {str(k): mean_ci(v) for k, v in kshot.items() if v}}


def calibrate_manifest(rows: Sequence[Utterance], seed: int = 0) -> dict:
    """Extract features for ``rows`` (one corpus) and run :func:`calibrate`."""
    emotions = sorted({u.emotion for u in rows})
    x = np.stack([utterance_features(load_audio(u.path)) for u in rows])
    y = np.array([emotions.index(u.emotion) for u in rows])
    speakers, splits = np.array([u.speaker for u in rows]), np.array([u.split for u in rows])
    report = calibrate(x, y, speakers, splits, seed=seed)
    report["emotions"] = emotions
    return report


def write_report(report: dict, out: Path, command: str) -> None:
    """``calibration.json`` and a readable ``calibration.md`` in ``out``."""
    (out / "calibration.json").write_text(json.dumps(report, indent=1) + "\n")
    pct = lambda mc: f"{100 * mc[0]:.1f} ± {100 * mc[1]:.1f}"  # noqa: E731
    lines = [
        "# Calibration of the synthetic target corpus", "",
        f"Produced by `{command}`. Plain acoustic statistics (log-mel, pitch, energy, spectral shape), "
        f"{report['n_speakers']} speakers, {len(report['emotions'])} emotions "
        f"({', '.join(report['emotions'])}), scored on each speaker's test split "
        f"({report['n_test_utterances']} utterances); mean over the {report['n_speakers']} speakers "
        f"± 95% CI (t-interval); k-shot accuracies are first averaged over {report['repeats']} draws "
        "of the k examples per speaker.", "",
        "| classifier | accuracy (%) |", "|---|---|",
        f"| chance | {100 * report['chance']:.1f} |",
        f"| speaker-independent (leave-one-speaker-out LDA) | {pct(report['speaker_independent'])} |",
        f"| speaker-normalised features (unlabelled adaptation) | {pct(report['speaker_normalised'])} |",
    ]
    lines += [f"| per-speaker, k = {k} per class (adapted class means) | {pct(v)} |"
              for k, v in report["per_speaker_kshot"].items()]
    (out / "calibration.md").write_text("\n".join(lines) + "\n")
