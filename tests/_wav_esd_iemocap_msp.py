"""Helpers that write tiny audio files and junk for the ESD, IEMOCAP and MSP corpus tests."""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import soundfile as sf


def write_wav(path: Path, seconds: float = 0.1, sr: int = 16_000) -> Path:
    """A short sine with a little noise (seeded by the file name) at ``path``, creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(path.name.encode()))
    t = np.arange(int(round(seconds * sr))) / sr
    x = 0.3 * np.sin(2 * np.pi * rng.uniform(150, 300) * t) + 0.01 * rng.standard_normal(t.shape[0])
    sf.write(str(path), x.astype(np.float32), sr, subtype="PCM_16")
    return path


def write_junk(folder: Path, names: Iterable[str] = ("README.txt", ".DS_Store")) -> None:
    """Non-audio files real copies carry, plus an AppleDouble ``._`` twin of every wav below ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"not audio\n")
    for wav in list(folder.rglob("*.wav")):
        if not wav.name.startswith("._"):
            (wav.parent / f"._{wav.name}").write_bytes(b"\x00\x05\x16\x07AppleDouble")
