"""Audio I/O: read anything soundfile reads, downmix, resample to 16 kHz, crop or pad.

Bad files (unreadable, empty, silent, non-finite) raise :class:`AudioError` with the reason; a
:class:`ProblemReport` collects them so a long run skips a bad file with a warning instead of dying.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf

from metalearn.util.errors import MetalearnError

log = logging.getLogger(__name__)

TARGET_SR = 16_000
SILENCE_PEAK = 1e-4  # a file whose absolute peak stays below this is treated as silent


class AudioError(Exception):
    """A file that cannot be used as speech; ``str(err)`` is the reason."""


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read ``path`` as float32 mono at its own rate and validate it.

    Returns:
        (wave [T] float32, sample_rate)
    Raises:
        AudioError: unreadable, empty, non-finite or silent.
    """
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError, RuntimeError, EOFError...
        raise AudioError(f"unreadable ({_reason(e)})") from None
    if data.shape[0] == 0:
        raise AudioError("empty (0 samples)")
    wave = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(wave).all():
        raise AudioError("non-finite samples (NaN or Inf)")
    if float(np.abs(wave).max()) < SILENCE_PEAK:
        raise AudioError("silent (peak below 1e-4)")
    return np.ascontiguousarray(wave, dtype=np.float32), int(sr)


def _reason(err: Exception) -> str:
    """soundfile's message without the "Error opening 'path': " prefix that repeats the path."""
    text = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
    return re.sub(r"^Error opening .*?: ", "", text)


def resample(wave: np.ndarray, sr: int, target_sr: int = TARGET_SR) -> np.ndarray:
    """Polyphase resampling of ``wave`` [T] from ``sr`` to ``target_sr`` (identity when equal)."""
    if sr == target_sr:
        return wave
    from scipy.signal import resample_poly  # 0.6 s to import: only where audio is resampled

    ratio = Fraction(target_sr, sr)
    return resample_poly(wave, ratio.numerator, ratio.denominator).astype(np.float32)


def crop_or_pad(wave: np.ndarray, n_samples: int, pad: bool = False) -> np.ndarray:
    """Keep the first ``n_samples`` of ``wave`` [T]; zero-pad to exactly that length when ``pad``."""
    if wave.shape[0] >= n_samples:
        return wave[:n_samples]
    if not pad:
        return wave
    return np.pad(wave, (0, n_samples - wave.shape[0]))


def load_audio(path: str | os.PathLike, sample_rate: int = TARGET_SR,
               max_seconds: float | None = None, pad: bool = False) -> np.ndarray:
    """Read, downmix, resample to ``sample_rate`` and optionally crop/pad to ``max_seconds``.

    Returns:
        wave [T] float32, T <= max_seconds * sample_rate (== when ``pad``).
    """
    wave, sr = read_audio(path)
    wave = resample(wave, sr, sample_rate)
    if max_seconds is not None:
        wave = crop_or_pad(wave, int(round(max_seconds * sample_rate)), pad)
    return wave


@dataclasses.dataclass(frozen=True)
class Problem:
    """A file that was skipped, and why."""

    path: str
    reason: str


@dataclasses.dataclass
class ProblemReport:
    """Collects skipped files. With ``strict`` the first problem becomes a :class:`MetalearnError`."""

    strict: bool = False
    max_warnings: int = 10
    problems: list[Problem] = dataclasses.field(default_factory=list)

    def add(self, path: str | os.PathLike, reason: str) -> None:
        if self.strict:
            raise MetalearnError(f"{path}: {reason}")
        if len(self.problems) < self.max_warnings:
            log.warning("skipping %s: %s", path, reason)
        elif len(self.problems) == self.max_warnings:
            log.warning("more problems: not shown one by one; see the summary")
        self.problems.append(Problem(str(path), reason))

    def __len__(self) -> int:
        return len(self.problems)

    def summary(self) -> str:
        """One line: how many files were skipped, by reason."""
        if not self.problems:
            return "0 problems"
        kinds: dict[str, int] = {}
        for p in self.problems:
            key = p.reason.split(" (")[0]
            kinds[key] = kinds.get(key, 0) + 1
        parts = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        return f"{len(self.problems)} problem{'s' * (len(self.problems) != 1)}: {parts}"

    def write(self, path: str | os.PathLike) -> None:
        """Write the problems as a tab-separated file (path, reason)."""
        with open(Path(path), "w", encoding="utf-8") as f:
            f.write("path\treason\n")
            for p in self.problems:
                f.write(f"{p.path}\t{p.reason}\n")
