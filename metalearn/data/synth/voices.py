"""Synthetic speakers: espeak-ng voice variants with their own pitch, formants and voice quality."""

from __future__ import annotations

import dataclasses

import numpy as np

# English espeak-ng voices: accents add between-speaker variety on top of the variant parameters.
ACCENTS: tuple[str, ...] = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan")


@dataclasses.dataclass(frozen=True)
class Voice:
    """A speaker's neutral voice.

    Attributes:
        gender: "female" or "male".
        accent: espeak-ng language voice the variant applies to.
        pitch_low_hz, pitch_high_hz: the variant's pitch range (espeak ``pitch`` line).
        formant_scale: frequency scaling (percent) of formants 0..5; a vocal tract length cue.
        breath, roughness, flutter: voice quality at rest (espeak variant units).
        rate_wpm: speaking rate at rest.
        tilt_db_oct: spectral tilt of the speaker's voice (dB per octave around 1 kHz).
    """

    gender: str
    accent: str
    pitch_low_hz: float
    pitch_high_hz: float
    formant_scale: tuple[float, ...]
    breath: float
    roughness: float
    flutter: float
    rate_wpm: float
    tilt_db_oct: float


def sample_voice(rng: np.random.Generator, gender: str) -> Voice:
    """Draw a voice of ``gender``; distinct draws give distinct speakers."""
    if gender == "female":
        low, span, tract = rng.uniform(160, 230), rng.uniform(60, 120), rng.uniform(1.04, 1.18)
    elif gender == "male":
        low, span, tract = rng.uniform(78, 125), rng.uniform(30, 70), rng.uniform(0.88, 1.01)
    else:
        raise ValueError(f"gender must be female or male, got {gender!r}")
    scale = tuple(float(100 * tract * rng.uniform(0.97, 1.03)) for _ in range(6))
    return Voice(gender=gender, accent=str(rng.choice(ACCENTS)), pitch_low_hz=float(low),
                 pitch_high_hz=float(low + span), formant_scale=scale,
                 breath=float(rng.uniform(0, 2)), roughness=float(rng.uniform(0, 3)),
                 flutter=float(rng.uniform(0, 12)), rate_wpm=float(rng.uniform(145, 190)),
                 tilt_db_oct=float(rng.uniform(-1.5, 1.5)))


def variant_file(gender: str, pitch_low_hz: float, pitch_high_hz: float, formant_scale: tuple[float, ...],
                 breath: float, roughness: float, flutter: float) -> str:
    """The text of an espeak-ng variant file with these values (rounded to the file's integers)."""
    b = int(round(np.clip(breath, 0, 8)))
    lines = ["language variant", "name metalearn", f"gender {gender}",
             f"pitch {int(round(pitch_low_hz))} {int(round(pitch_high_hz))}"]
    lines += [f"formant {i} {int(round(f))} 100 100" for i, f in enumerate(formant_scale)]
    lines += [f"breath 0 {max(b - 1, 0)} {b} {b} {b} {b} {b} {max(b - 1, 0)}",
              f"roughness {int(round(np.clip(roughness, 0, 7)))}",
              f"flutter {int(round(np.clip(flutter, 0, 60)))}"]
    return "\n".join(lines) + "\n"
