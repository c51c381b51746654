"""Helpers that write tiny audio files, junk files and corpus trees for the tests."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import soundfile as sf

from metalearn.data.manifest import Utterance


def tone(seconds: float = 0.1, sr: int = 16_000, freq: float = 220.0, channels: int = 1,
         amplitude: float = 0.3) -> np.ndarray:
    """A sine [T] (or [T, channels], channel c scaled by (c + 1) / channels) as float32."""
    t = np.arange(int(round(seconds * sr))) / sr
    x = (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    if channels == 1:
        return x
    return np.stack([x * (c + 1) / channels for c in range(channels)], axis=1)


def write_wav(path: Path, seconds: float = 0.1, sr: int = 16_000, channels: int = 1,
              subtype: str | None = "PCM_16", freq: float = 220.0, data: np.ndarray | None = None,
              fmt: str | None = None) -> Path:
    """Write a short tone (or ``data``) to ``path``, creating folders; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    x = tone(seconds, sr, freq, channels) if data is None else data
    sf.write(str(path), x, sr, subtype=subtype, format=fmt)
    return path


def write_junk(folder: Path, names: Iterable[str] = ("README.txt", ".DS_Store")) -> None:
    """Non-audio files that real corpus copies carry, plus an AppleDouble twin of every wav."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"not audio\n")
    for wav in list(folder.rglob("*.wav")):
        if not wav.name.startswith("._"):
            (wav.parent / f"._{wav.name}").write_bytes(b"\x00\x05\x16\x07AppleDouble")


def write_nan_wav(path: Path, seconds: float = 0.1, sr: int = 16_000) -> Path:
    """A float WAV holding NaN samples (a file the audio layer must reject)."""
    x = tone(seconds, sr)
    x[5:10] = np.nan
    return write_wav(path, sr=sr, subtype="FLOAT", data=x)


def cremad_tree(root: Path, names: Iterable[str], demographics: dict[str, str] | None,
                seconds: float = 0.1) -> Path:
    """``root/AudioWAV/{name}`` for each name, plus ``VideoDemographics.csv`` (actor -> Sex) if given."""
    for name in names:
        write_wav(root / "AudioWAV" / name, seconds=seconds)
    if demographics is not None:
        lines = ["ActorID,Age,Sex,Race,Ethnicity"]
        lines += [f"{a},30,{sex},Caucasian,Not Hispanic" for a, sex in demographics.items()]
        (root / "VideoDemographics.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def ravdess_tree(root: Path, names: Iterable[str], sr: int = 48_000, seconds: float = 0.1) -> Path:
    """``root/Actor_{AA}/{name}`` for each RAVDESS name (actor taken from its last field)."""
    for name in names:
        actor = Path(name).stem.split("-")[-1]
        write_wav(root / f"Actor_{actor}" / name, sr=sr, seconds=seconds)
    return root


# Synthetic manifests for the episode and engine tests (no audio files: fake paths).
EMOTIONS = ("neutral", "happy", "angry", "sad", "surprise")  # canonical order
SPLITS = ("train", "evaluation", "test", "")
SPEAKERS = ("0011", "0012", "0013")


def make_rows(speakers=SPEAKERS, counts=(10, 3, 4), corpus="esd", emotions=EMOTIONS, short=None) -> list[Utterance]:
    """``counts`` = (train, evaluation, test) utterances per speaker x emotion; ``short`` overrides train counts."""
    rows = []
    for s in speakers:
        for e in emotions:
            n_train = (short or {}).get((s, e), counts[0])
            for split, n in zip(("train", "evaluation", "test"), (n_train, *counts[1:]), strict=True):
                for j in range(n):
                    uid = f"{s}_{e}_{split}_{j}"
                    rows.append(Utterance(uid, f"/fake/{uid}.wav", corpus, s, "female", e, e, split, 1.0, 16000))
    return rows
