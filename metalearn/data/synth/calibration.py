"""Does the corpus reward speaker adaptation? A report on plain acoustic statistics.

Three classifiers on :func:`features.utterance_features`, all scored on each speaker's test split:
- speaker-independent: shrinkage LDA trained on the other speakers (leave-one-speaker-out);
- speaker-normalised: the same, after z-scoring every speaker's features with that speaker's own
  unlabelled statistics (a classic adaptation without labels);
- per-speaker k-shot: class means from k labelled examples per class of the test speaker, the
  within-class covariance from the other speakers (LDA with adapted means); the k examples come from the
  speaker's train split, or without splits from its utterances, and are never scored themselves.
A corpus that rewards adaptation scores clearly above chance speaker-independently, and higher
again with k examples of the speaker, without reaching 100%.

Content check of the k-shot baseline (with ``sentences``): the accuracy of the scored utterances whose
sentence one of the k examples per class says too (with another emotion: the corpus says each sentence in
every emotion) against the others, pooled per speaker over the draws, then averaged over speakers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metalearn.data.audio import load_audio
from metalearn.data.manifest import Utterance
from metalearn.data.sentences import sentence_key
from metalearn.data.synth.features import utterance_features
from metalearn.util import markdown
from metalearn.util.intervals import t_interval


@dataclass(frozen=True)
class CalibrationData:
    """What :func:`calibrate` reads, one entry per utterance [N]: features ``x`` [N, D], labels ``y`` [N] in
    0..C-1, ``speakers`` [N], ``splits`` [N] ("train", "test", or "" for a corpus without splits) and, for the
    content check, ``sentences`` [N] (sentence keys; None: no check)."""

    x: np.ndarray
    y: np.ndarray
    speakers: np.ndarray
    splits: np.ndarray
    sentences: np.ndarray | None = None

    @property
    def n_classes(self) -> int:
        return int(self.y.max()) + 1

    def scored(self, speaker: str) -> np.ndarray:
        """Mask [N] of ``speaker``'s utterances every classifier is scored on: its test split, or all of them."""
        return (self.speakers == speaker) & ((self.splits == "test") | (self.splits == ""))

    def examples(self, speaker: str) -> np.ndarray:
        """Mask [N] of the utterances k-shot examples of ``speaker`` are drawn from: its train split, or (a
        corpus without splits) the scored ones, of which the drawn examples are then left unscored."""
        if (self.splits == "train").any():
            return (self.speakers == speaker) & (self.splits == "train")
        return self.scored(speaker)


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


def _leave_one_out(x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, n_classes: int
                   ) -> float:
    """Accuracy on ``test`` of shrinkage LDA fitted on ``train`` (boolean masks [N])."""
    xtr, xte = _standardise(x[train], x[test])
    w, b = lda_fit(xtr, y[train], n_classes)
    return float(np.mean(np.argmax(xte @ w + b, axis=1) == y[test]))


def _kshot(data: CalibrationData, speaker: str, k: int, repeats: int, rng: np.random.Generator
           ) -> tuple[float, np.ndarray] | None:
    """(mean accuracy of ``speaker`` over ``repeats`` draws of k examples per class, counts [4]); None if too
    few. The drawn examples are not scored. Counts, over the draws: right and all scored utterances whose
    sentence a drawn example says, then right and all of the others (zeros without ``data.sentences``)."""
    x, y, sentences, n_classes = data.x, data.y, data.sentences, data.n_classes
    others, pool, test = data.speakers != speaker, data.examples(speaker), data.scored(speaker)
    candidates = [np.flatnonzero(pool & (y == c)) for c in range(n_classes)]
    if min(len(c) for c in candidates) < k:
        return None
    xtr, xall = _standardise(x[others], x)
    cov = within_covariance(xtr, y[others], n_classes)
    accs, counts = [], np.zeros(4, dtype=np.int64)
    for _ in range(repeats):
        chosen = [rng.choice(c, k, replace=False) for c in candidates]
        w, b = lda_from(np.stack([xall[c].mean(axis=0) for c in chosen]), cov, 0.2)
        used = np.concatenate(chosen)
        scored = np.setdiff1d(np.flatnonzero(test), used)
        if not len(scored):
            continue
        right = np.argmax(xall[scored] @ w + b, axis=1) == y[scored]
        accs.append(np.mean(right))
        if sentences is not None:
            shared = np.isin(sentences[scored], sentences[used])
            counts += [right[shared].sum(), shared.sum(), right[~shared].sum(), (~shared).sum()]
    return (float(np.mean(accs)), counts) if accs else None


def _content(counts: Sequence[np.ndarray]) -> dict:
    """The content check of one k from per-speaker counts [4] (see :func:`_kshot`)."""
    shared = [c[0] / c[1] for c in counts if c[1]]
    other = [c[2] / c[3] for c in counts if c[3]]
    return {"shared": t_interval(shared)[:2] if shared else None,
            "other": t_interval(other)[:2] if other else None,
            "n_shared": int(sum(c[1] for c in counts)), "n_other": int(sum(c[3] for c in counts))}


def calibrate(data: CalibrationData, ks: Sequence[int] = (1, 5, 10), repeats: int = 20, seed: int = 0) -> dict:
    """Accuracies of the three classifiers on ``data``.

    Each entry is (mean over speakers, 95% CI half-width); k-shot accuracies are first averaged
    over ``repeats`` draws per speaker. With ``data.sentences``, ``kshot_content`` holds per k
    the content check of the k-shot baseline (module docstring): ``shared`` and ``other`` (mean, CI) or
    None when no scored utterance is of that kind, and their counts ``n_shared``, ``n_other``.
    """
    x, y, speakers, splits, n_classes = data.x, data.y, data.speakers, data.splits, data.n_classes
    rng = np.random.default_rng(seed)
    normed = x.copy()
    for s in np.unique(speakers):
        normed[speakers == s] = _standardise(x[speakers == s])[0]
    si, sn, kshot, content = [], [], {k: [] for k in ks}, {k: [] for k in ks}
    for s in np.unique(speakers):
        test, others = data.scored(s), speakers != s
        si.append(_leave_one_out(x, y, others, test, n_classes))
        sn.append(_leave_one_out(normed, y, others, test, n_classes))
        for k in ks:
            result = _kshot(data, s, k, repeats, rng)
            if result is not None:
                kshot[k].append(result[0])
                content[k].append(result[1])
    report = {"chance": 1.0 / n_classes, "n_speakers": int(len(np.unique(speakers))), "repeats": repeats,
              "n_test_utterances": int(np.sum((splits == "test") | (splits == ""))),
              "speaker_independent": t_interval(si)[:2], "speaker_normalised": t_interval(sn)[:2],
              "per_speaker_kshot": {str(k): t_interval(v)[:2] for k, v in kshot.items() if v}}
    if data.sentences is not None:
        report["kshot_content"] = {str(k): _content(v) for k, v in content.items() if v}
    return report


def calibrate_manifest(rows: Sequence[Utterance], seed: int = 0) -> dict:
    """Extract features for ``rows`` (one corpus) and run :func:`calibrate`."""
    emotions = sorted({u.emotion for u in rows})
    x = np.stack([utterance_features(load_audio(u.path)) for u in rows])
    y = np.array([emotions.index(u.emotion) for u in rows])
    speakers, splits = np.array([u.speaker for u in rows]), np.array([u.split for u in rows])
    report = calibrate(CalibrationData(x, y, speakers, splits, np.array([sentence_key(u) for u in rows])), seed=seed)
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
    ]
    rows = [["chance", f"{100 * report['chance']:.1f}"],
            ["speaker-independent (leave-one-speaker-out LDA)", pct(report["speaker_independent"])],
            ["speaker-normalised features (unlabelled adaptation)", pct(report["speaker_normalised"])],
            *([f"per-speaker, k = {k} per class (adapted class means)", pct(v)]
              for k, v in report["per_speaker_kshot"].items())]
    lines += markdown.table(["classifier", "accuracy (%)"], rows, [markdown.PLAIN] * 2)
    (out / "calibration.md").write_text("\n".join(lines + content_lines(report)) + "\n")


def content_lines(report: dict) -> list[str]:
    """The content check of the k-shot baseline as Markdown lines (none without ``kshot_content``)."""
    content = report.get("kshot_content")
    if content is None:
        return []
    lines = ["", "Content check of the per-speaker k-shot baseline: accuracy (%) of the scored utterances whose "
             "sentence one of the k examples says too (with another emotion) against the others, per speaker "
             "over the draws, then mean over speakers ± 95% CI.", ""]
    if not any(c["n_shared"] for c in content.values()):
        return lines[:2] + ["No scored utterance says a sentence of its k examples (the splits hold different "
                            "sentences)."]
    pct = lambda mc: "–" if mc is None else f"{100 * mc[0]:.1f} ± {100 * mc[1]:.1f}"  # noqa: E731
    rows = [[k, pct(c["shared"]), pct(c["other"]), f"{c['n_shared']} / {c['n_other']}"] for k, c in content.items()]
    return lines + markdown.table(["k per class", "shared sentence", "other sentences", "utterances (shared / other)"],
                                  rows, [markdown.PLAIN] * 4)
