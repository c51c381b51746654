"""Recording conditions: what a corpus's microphones, rooms and levels do to the voice."""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import fft as sfft
from scipy.signal import butter, sosfilt

from metalearn.data.audio import resample


@dataclasses.dataclass(frozen=True)
class Condition:
    """A corpus's recording condition.

    Attributes:
        snr_db: speech-to-noise ratio of the added background noise.
        noise_colour: 0 white, 1 pink, 2 brown (spectral slope of the noise).
        band_hz: pass band of the channel (low, high).
        tilt_db_oct: channel colouring (dB per octave around 1 kHz).
        level_dbfs: RMS level of the speech.
        sample_rate: the corpus's file sample rate.
    """

    snr_db: float = 40.0
    noise_colour: float = 1.0
    band_hz: tuple[float, float] = (60.0, 7600.0)
    tilt_db_oct: float = 0.0
    level_dbfs: float = -24.0
    sample_rate: int = 16_000


def spectral_tilt(wave: np.ndarray, sr: int, db_per_octave: float) -> np.ndarray:
    """Tilt the spectrum of ``wave`` [T] by ``db_per_octave`` around 1 kHz (flat below 100 Hz)."""
    if db_per_octave == 0.0 or wave.size == 0:
        return wave
    n = sfft.next_fast_len(wave.size, real=True)
    spec = sfft.rfft(wave, n=n)
    freqs = np.maximum(sfft.rfftfreq(n, 1.0 / sr), 100.0)
    spec *= 10.0 ** (db_per_octave * np.log2(freqs / 1000.0) / 20.0)
    return sfft.irfft(spec, n=n)[: wave.size]


def coloured_noise(rng: np.random.Generator, n: int, colour: float) -> np.ndarray:
    """Unit-RMS noise [n] with power spectrum ~ 1 / f**colour."""
    m = sfft.next_fast_len(max(n, 2), real=True)
    spec = sfft.rfft(rng.normal(size=m))
    freqs = sfft.rfftfreq(m)
    freqs[0] = freqs[1]
    spec /= freqs ** (colour / 2.0)
    noise = sfft.irfft(spec, n=m)[:n]
    return noise / (np.sqrt(np.mean(noise**2)) + 1e-12)


def record(wave: np.ndarray, sr: int, cond: Condition, rng: np.random.Generator,
           gain_db: float = 0.0) -> np.ndarray:
    """Pass clean speech ``wave`` [T] at ``sr`` through ``cond``; returns float32 [T'] at its rate.

    ``gain_db`` is the utterance's own loudness relative to the corpus level (vocal effort).
    """
    wave = resample(wave.astype(np.float64), sr, cond.sample_rate, backend="soundfile")  # byte-identical corpora
    sr = cond.sample_rate
    wave = spectral_tilt(wave, sr, cond.tilt_db_oct)
    high = min(cond.band_hz[1], 0.45 * sr)
    wave = sosfilt(butter(4, (cond.band_hz[0], high), btype="band", fs=sr, output="sos"), wave)
    rms = np.sqrt(np.mean(wave**2)) + 1e-12
    wave = wave * 10.0 ** ((cond.level_dbfs + gain_db) / 20.0) / rms
    noise_rms = 10.0 ** ((cond.level_dbfs - cond.snr_db) / 20.0)
    wave = wave + noise_rms * coloured_noise(rng, wave.size, cond.noise_colour)
    peak = np.abs(wave).max()
    if peak > 0.99:
        wave *= 0.99 / peak
    return wave.astype(np.float32)
