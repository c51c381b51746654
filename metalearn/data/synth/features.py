"""Plain acoustic statistics of an utterance: log-mel, pitch, energy and spectral shape summaries.

Used by the calibration report to ask whether the synthetic corpus rewards speaker adaptation,
with no neural network involved.
"""

from __future__ import annotations

import numpy as np

SR = 16_000
N_FFT, HOP, N_MELS = 512, 160, 24
F0_MIN, F0_MAX = 60.0, 500.0


def _frames(wave: np.ndarray, size: int, hop: int) -> np.ndarray:
    """Overlapping frames [F, size] of ``wave`` [T] (zero-padded to at least one frame)."""
    if wave.size < size:
        wave = np.pad(wave, (0, size - wave.size))
    n = 1 + (wave.size - size) // hop
    idx = np.arange(size)[None, :] + hop * np.arange(n)[:, None]
    return wave[idx]


def mel_filterbank(n_mels: int = N_MELS, n_fft: int = N_FFT, sr: int = SR) -> np.ndarray:
    """Triangular mel filters [n_mels, n_fft // 2 + 1]."""
    mel = np.linspace(0, 2595 * np.log10(1 + (sr / 2) / 700), n_mels + 2)
    hz = 700 * (10 ** (mel / 2595) - 1)
    bins = np.fft.rfftfreq(n_fft, 1 / sr)
    lo, mid, hi = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    up = (bins[None] - lo) / (mid - lo)
    down = (hi - bins[None]) / (hi - mid)
    return np.clip(np.minimum(up, down), 0, None)


_MEL = mel_filterbank()


def f0_track(wave: np.ndarray, sr: int = SR) -> np.ndarray:
    """Autocorrelation pitch [F] in Hz per 40 ms frame (20 ms hop); 0 where unvoiced."""
    frames = _frames(wave, 640, 2 * HOP)
    frames = frames - frames.mean(axis=1, keepdims=True)
    # 1024 >= 640 + the longest lag searched (sr / F0_MIN = 267): no circular wrap-around in range.
    spec = np.fft.rfft(frames * np.hanning(640), n=1024, axis=1)
    ac = np.fft.irfft(np.abs(spec) ** 2, axis=1)[:, :640]
    lo, hi = int(sr / F0_MAX), int(sr / F0_MIN)
    peak = lo + np.argmax(ac[:, lo:hi], axis=1)
    strength = ac[np.arange(len(ac)), peak] / (ac[:, 0] + 1e-12)
    energy = ac[:, 0]
    floor = 0.05 * np.median(energy[energy > 0]) if (energy > 0).any() else np.inf
    voiced = (strength > 0.45) & (energy > floor)
    return np.where(voiced, sr / peak, 0.0)


def utterance_features(wave: np.ndarray, sr: int = SR) -> np.ndarray:
    """Statistics [2 * N_MELS + 12] of ``wave`` [T] at 16 kHz.

    Log-mel mean and std per band; log-f0 mean, std, 10th and 90th percentiles; voiced fraction;
    frame log-energy mean, std, 90th percentile; spectral centroid mean and std; zero-crossing
    rate; duration in seconds.
    """
    frames = _frames(wave, N_FFT, HOP) * np.hanning(N_FFT)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    logmel = np.log(power @ _MEL.T + 1e-8)
    f0 = f0_track(wave, sr)
    voiced = f0[f0 > 0]
    logf0 = np.log(voiced) if voiced.size >= 3 else np.log(np.full(3, 100.0))
    energy = np.log(power.sum(axis=1) + 1e-8)
    freqs = np.fft.rfftfreq(N_FFT, 1 / sr)
    centroid = (power @ freqs) / (power.sum(axis=1) + 1e-12)
    zcr = np.mean(np.abs(np.diff(np.sign(wave))) > 0)
    return np.concatenate([
        logmel.mean(axis=0), logmel.std(axis=0),
        [logf0.mean(), logf0.std(), np.percentile(logf0, 10), np.percentile(logf0, 90),
         voiced.size / max(len(f0), 1)],
        [energy.mean(), energy.std(), np.percentile(energy, 90)],
        [centroid.mean() / 1000, centroid.std() / 1000, zcr, wave.size / sr],
    ]).astype(np.float64)
