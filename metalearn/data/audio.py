"""Audio I/O: read anything soundfile reads, downmix, resample to 16 kHz, crop or pad.

Bad files (unreadable, empty, silent, non-finite) raise :class:`AudioError` with the reason; a
:class:`ProblemReport` collects them so a long run skips a bad file with a warning instead of dying.

Backends (the ``backend`` argument of :func:`read_audio`, :func:`resample` and :func:`load_audio`):
``soundfile`` reads with soundfile and resamples with ``scipy.signal.resample_poly``; ``torchaudio`` reads with
``torchaudio.load`` (through torchcodec from torchaudio 2.9 on; soundfile when that does not import) and resamples
with ``torchaudio.transforms.Resample`` given resample_poly's filter (Kaiser-windowed sinc, beta 5, 10 zero
crossings a side, cutoff at the lower Nyquist frequency, unit DC gain), so the two agree to float precision;
``auto`` (the default) is torchaudio when it imports and torch is already loaded in the process (so light commands
such as ``manifest`` never pay torch's import), else soundfile, saying why once in the log. torchaudio is optional:
no release loads beside the pinned CPU torch (its C++ extension wants ``libc10_cuda.so``).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import logging
import os
import re
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from metalearn.util.errors import MetalearnError

log = logging.getLogger(__name__)

TARGET_SR = 16_000
SILENCE_PEAK = 1e-4  # a file whose absolute peak stays below this is treated as silent
BACKENDS = ("auto", "soundfile", "torchaudio")
# scipy.signal.resample_poly's default filter in torchaudio's terms (its window is ('kaiser', 5.0), half length
# 10 * max(up, down), cutoff 1 / max(up, down)); torchaudio's kernel is then scaled to scipy's unit DC gain.
POLY_FILTER: dict[str, Any] = {"lowpass_filter_width": 10, "rolloff": 1.0, "resampling_method": "sinc_interp_kaiser",
                               "beta": 5.0}
_said: set[str] = set()


class AudioError(Exception):
    """A file that cannot be used as speech; ``str(err)`` is the reason."""


def read_audio(path: str | os.PathLike, backend: str = "auto") -> tuple[np.ndarray, int]:
    """Read ``path`` as float32 mono at its own rate and validate it.

    Returns:
        (wave [T] float32, sample_rate)
    Raises:
        AudioError: unreadable, empty, non-finite or silent.
        MetalearnError: an unknown backend, or ``torchaudio`` asked for where it does not import.
    """
    load = _torchaudio_reader() if use_torchaudio(backend) else None
    try:
        if load is not None:
            tensor, sr = load(str(path))                          # [C, T] float32 in [-1, 1]
            data = tensor.numpy().T                               # [T, C]
        else:
            data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError, RuntimeError, EOFError; torchcodec RuntimeError...
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


def resample(wave: np.ndarray, sr: int, target_sr: int = TARGET_SR, backend: str = "auto") -> np.ndarray:
    """Polyphase resampling of ``wave`` [T] from ``sr`` to ``target_sr`` (identity when equal).

    Returns:
        [ceil(T * target_sr / sr)] float32; both backends apply the same filter (agree to about 1e-7).
    """
    if sr == target_sr and backend in BACKENDS:
        return wave
    if use_torchaudio(backend):
        import torch

        resampler, gain = _torchaudio_resampler(sr, target_sr)
        with torch.no_grad():
            out = resampler(torch.from_numpy(np.asarray(wave, dtype=np.float64))) / gain
        return out.numpy().astype(np.float32)
    from scipy.signal import resample_poly  # 0.6 s to import: only where audio is resampled

    ratio = Fraction(target_sr, sr)
    return resample_poly(wave, ratio.numerator, ratio.denominator).astype(np.float32)


def use_torchaudio(backend: str = "auto") -> bool:
    """Whether ``backend`` reads and resamples with torchaudio in this process (see the module docstring).

    Raises:
        MetalearnError: ``backend`` not in :data:`BACKENDS`, or ``torchaudio`` where it does not import.
    """
    if backend not in BACKENDS:
        raise MetalearnError(f"audio backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if backend == "soundfile":
        return False
    if backend == "auto" and "torch" not in sys.modules:
        _say_once(logging.DEBUG, "audio backend auto: soundfile and scipy (torch is not loaded in this process)")
        return False
    module, why = _torchaudio()
    if module is not None:
        _say_once(logging.INFO, f"audio backend {backend}: torchaudio {module.__version__}")
        return True
    if backend == "torchaudio":
        raise MetalearnError(f"audio backend 'torchaudio': {why}; expected 'auto' or 'soundfile' here")
    _say_once(logging.INFO, f"audio backend auto: soundfile and scipy ({why})")
    return False


def _say_once(level: int, message: str) -> None:
    if message not in _said:
        _said.add(message)
        log.log(level, message)


@functools.cache
def _torchaudio() -> tuple[Any, str]:
    """(the torchaudio module, "") when it imports, else (None, why not)."""
    if importlib.util.find_spec("torchaudio") is None:
        return None, "torchaudio is not installed"
    try:
        import torchaudio
    except Exception as e:  # OSError from its C++ extension beside a CPU-only torch, ImportError, ...
        return None, f"torchaudio does not import: {type(e).__name__}: {_reason(e)}"
    return torchaudio, ""


@functools.cache
def _torchaudio_reader() -> Any:
    """``torchaudio.load``, or None (said once) where it cannot read: from 2.9 on it reads through torchcodec."""
    module, _ = _torchaudio()
    major, minor = (int(part) for part in re.findall(r"\d+", module.__version__)[:2])
    if (major, minor) >= (2, 9):
        why = "torchcodec is not installed" if importlib.util.find_spec("torchcodec") is None else ""
        if not why:
            try:
                import torchcodec  # noqa: F401
            except Exception as e:  # its libraries fail to load beside a mismatched torch
                why = f"torchcodec does not import: {type(e).__name__}: {_reason(e)}"
        if why:
            _say_once(logging.INFO, f"torchaudio {module.__version__} reads files through torchcodec ({why}); "
                                    "reading with soundfile, resampling with torchaudio")
            return None
    return module.load


@functools.lru_cache(maxsize=16)
def _torchaudio_resampler(sr: int, target_sr: int) -> tuple[Any, float]:
    """(torchaudio ``Resample`` with :data:`POLY_FILTER` in float64, its mean DC gain over the output phases)."""
    import torch

    module, _ = _torchaudio()
    resampler = module.transforms.Resample(sr, target_sr, dtype=torch.float64, **POLY_FILTER)
    phases = resampler.kernel.shape[0]                                       # kernel [phases, 1, taps]
    return resampler, float(resampler.kernel.sum()) / phases


def crop_or_pad(wave: np.ndarray, n_samples: int, pad: bool = False) -> np.ndarray:
    """Keep the first ``n_samples`` of ``wave`` [T]; zero-pad to exactly that length when ``pad``."""
    if wave.shape[0] >= n_samples:
        return wave[:n_samples]
    if not pad:
        return wave
    return np.pad(wave, (0, n_samples - wave.shape[0]))


def load_audio(path: str | os.PathLike, sample_rate: int = TARGET_SR, max_seconds: float | None = None,
               pad: bool = False, backend: str = "auto") -> np.ndarray:
    """Read, downmix, resample to ``sample_rate`` and optionally crop/pad to ``max_seconds``.

    Returns:
        wave [T] float32, T <= max_seconds * sample_rate (== when ``pad``).
    """
    wave, sr = read_audio(path, backend)
    wave = resample(wave, sr, sample_rate, backend)
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
