"""The calibration statistics: LDA, confidence intervals, and the adaptation gap they should detect."""

from __future__ import annotations

import numpy as np
import pytest

from metalearn.data.synth.calibration import CalibrationData, calibrate, lda_fit
from metalearn.data.synth.features import f0_track, utterance_features


def test_lda_separates_gaussian_classes():
    rng = np.random.default_rng(0)
    means = rng.normal(scale=3.0, size=(4, 6))
    y = np.repeat(np.arange(4), 50)
    x = means[y] + rng.normal(size=(200, 6))
    w, b = lda_fit(x, y, 4)
    assert np.mean(np.argmax(x @ w + b, axis=1) == y) > 0.95


def _speaker_styled(idiosyncrasy: float, seed: int = 0):
    """Features whose class means are a shared prototype plus a speaker-specific offset."""
    rng = np.random.default_rng(seed)
    protos = rng.normal(scale=2.0, size=(3, 8))
    xs, ys, spk, split = [], [], [], []
    for s in range(6):
        own = protos + idiosyncrasy * rng.normal(scale=2.0, size=(3, 8)) + rng.normal(scale=3.0, size=8)
        for c in range(3):
            for i in range(20):
                xs.append(own[c] + rng.normal(size=8))
                ys.append(c)
                spk.append(f"s{s}")
                split.append("train" if i < 12 else "test")
    return np.array(xs), np.array(ys), np.array(spk), np.array(split)


def test_calibration_detects_speaker_specific_styles():
    x, y, spk, split = _speaker_styled(idiosyncrasy=1.5)
    report = calibrate(CalibrationData(x, y, spk, split), ks=(1, 5), repeats=5)
    si = report["speaker_independent"][0]
    k5 = report["per_speaker_kshot"]["5"][0]
    assert report["n_speakers"] == 6 and report["chance"] == pytest.approx(1 / 3)
    assert k5 > si + 0.15


def test_calibration_without_styles_needs_no_adaptation():
    x, y, spk, split = _speaker_styled(idiosyncrasy=0.0)
    report = calibrate(CalibrationData(x, y, spk, split), ks=(5,), repeats=5)
    assert report["speaker_normalised"][0] > 0.9
    assert report["per_speaker_kshot"]["5"][0] < report["speaker_normalised"][0] + 0.05


def test_kshot_skipped_when_too_few_examples():
    """12 train utterances per speaker and class: k = 5 is scored, k = 50 cannot be drawn and is left out."""
    x, y, spk, split = _speaker_styled(idiosyncrasy=1.0)
    report = calibrate(CalibrationData(x, y, spk, split), ks=(5, 50), repeats=2)
    assert report["n_speakers"] == 6 and report["n_test_utterances"] == 6 * 3 * 8
    assert "50" not in report["per_speaker_kshot"]
    assert list(report["per_speaker_kshot"]) == ["5"], report  # the k that can be drawn is there
    mean, half = report["per_speaker_kshot"]["5"]
    assert 1 / 3 < mean <= 1 and half >= 0, report


def test_f0_track_finds_the_pitch_of_a_pulse_train():
    sr, f0 = 16_000, 160.0
    t = np.arange(sr) / sr
    wave = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 8))
    track = f0_track(wave.astype(np.float32), sr)
    assert np.mean(track > 0) > 0.9
    assert np.median(track[track > 0]) == pytest.approx(f0, rel=0.03)
    assert utterance_features(wave.astype(np.float32)).shape == (2 * 24 + 12,)


def _sentences_said(content: float, seed: int = 0):
    """No split: 6 speakers say 8 sentences in each of 3 emotions; features = a weak emotion signal plus
    ``content`` times a random code of the sentence."""
    rng = np.random.default_rng(seed)
    protos, codes = rng.normal(size=(3, 8)), rng.normal(size=(8, 8))
    x, y, spk, sentences = [], [], [], []
    for s in range(6):
        for c in range(3):
            for j in range(8):
                x.append(0.7 * protos[c] + content * codes[j] + rng.normal(size=8))
                y.append(c)
                spk.append(f"s{s}")
                sentences.append(f"sentence {j}")
    return np.array(x), np.array(y), np.array(spk), np.array([""] * len(y)), np.array(sentences)


def test_kshot_content_check_splits_scored_utterances_by_sentence():
    x, y, spk, split, sentences = _sentences_said(content=3.0)
    report = calibrate(CalibrationData(x, y, spk, split, sentences), ks=(1, 3), repeats=5)
    assert "kshot_content" not in calibrate(CalibrationData(x, y, spk, split), ks=(1,), repeats=2)
    for k in ("1", "3"):
        c = report["kshot_content"][k]
        # 3 emotions say an example's sentence: the content-dominated feature sends the 2 others to the
        # example's class, so shared-sentence utterances score far below chance, the others above them
        assert c["n_shared"] > 0 and c["n_other"] > 0
        assert c["shared"][0] < report["chance"] - 0.1 and c["other"][0] > c["shared"][0] + 0.2, c
    without = calibrate(CalibrationData(x, y, spk, split), ks=(1, 3), repeats=5)
    assert report["per_speaker_kshot"] == without["per_speaker_kshot"]


def test_kshot_examples_are_never_scored():
    """Noise features, no split: a scored example would be its own class mean (right at k = 1)."""
    rng = np.random.default_rng(0)
    y = np.tile(np.repeat(np.arange(3), 4), 8)
    spk = np.repeat([f"s{s}" for s in range(8)], 12)
    report = calibrate(CalibrationData(rng.normal(size=(96, 30)), y, spk, np.array([""] * 96)), ks=(1, 3),
                       repeats=20)
    for k in ("1", "3"):
        assert abs(report["per_speaker_kshot"][k][0] - 1 / 3) < 0.1, report
