"""How emotions are rendered, and how each speaker expresses them in a style of their own.

An emotion is a displacement from the speaker's neutral voice along :data:`DIMS` (prosody and
voice quality). :data:`PROTOTYPES` holds the population's displacement for each canonical emotion.
A speaker's own displacement mixes a speaker-specific magnitude of the prototype with a
speaker-specific direction (idiosyncrasy): a speaker-independent classifier is confused, while a
few examples of one speaker reveal that speaker's map. Displacements are in units of :data:`SCALE`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

DIMS: tuple[str, ...] = ("pitch_st", "range", "rate", "volume_db", "breath", "roughness", "flutter",
                         "tilt_db_oct", "wordgap")
# One unit of displacement along each dimension.
SCALE = np.array([3.0, 0.5, 0.15, 4.0, 2.0, 2.5, 12.0, 2.0, 2.0])

# Population displacements, in physical units (semitones, fraction, fraction, dB, espeak units...).
_PROTOTYPES_PHYSICAL: dict[str, tuple[float, ...]] = {
    "neutral": (0, 0, 0, 0, 0, 0, 0, 0, 0),
    "happy": (3.0, 0.5, 0.10, 2, 0, 0, 6, 1.5, 0),
    "angry": (2.0, 0.3, 0.12, 6, 0, 4, 0, 3.0, 0),
    "sad": (-2.5, -0.5, -0.25, -5, 3, 0, 6, -3.0, 4),
    "surprise": (5.0, 0.8, 0.05, 3, 1, 0, 0, 1.0, 1),
    "fear": (4.0, -0.2, 0.20, -1, 3, 0, 24, 0.0, 0),
    "disgust": (-1.0, 0.2, -0.15, 1, 0, 4, 0, -1.0, 2),
    "contempt": (-1.5, 0.3, -0.10, -1, 1, 2, 0, -1.0, 1),
    "calm": (-1.0, -0.3, -0.15, -3, 2, 0, 0, -1.5, 1),
    "frustrated": (1.0, -0.1, -0.05, 3, 2, 3, 0, 1.0, 0),
}
PROTOTYPES: dict[str, np.ndarray] = {e: np.array(v) / SCALE for e, v in _PROTOTYPES_PHYSICAL.items()}


@dataclasses.dataclass(frozen=True)
class StyleConfig:
    """How much speakers differ in expressing emotions.

    Attributes:
        magnitude: range of the speaker-specific gain on each emotion's prototype.
        idiosyncrasy: range of the speaker's own direction's length, relative to the prototype's norm.
        utterance_noise: standard deviation of per-utterance variation, in units of :data:`SCALE`.
        other_mix: for "other" and no-agreement labels, how far toward a random emotion they lean.
    """

    magnitude: tuple[float, float] = (0.4, 1.2)
    idiosyncrasy: tuple[float, float] = (1.0, 1.6)
    utterance_noise: float = 0.7
    other_mix: float = 0.6


def sample_style(rng: np.random.Generator, emotions: tuple[str, ...], cfg: StyleConfig
                 ) -> dict[str, np.ndarray]:
    """A speaker's displacement [len(DIMS)] for each emotion (neutral stays at the origin)."""
    idio = rng.uniform(*cfg.idiosyncrasy)
    style = {}
    for e in emotions:
        proto = PROTOTYPES[e] if e in PROTOTYPES else np.zeros(len(DIMS))
        norm = float(np.linalg.norm(proto))
        if e == "neutral" or norm == 0.0:
            style[e] = np.zeros(len(DIMS))
            continue
        direction = rng.normal(size=len(DIMS))
        direction *= idio * norm / np.linalg.norm(direction)
        style[e] = rng.uniform(*cfg.magnitude) * proto + direction
    return style


def utterance_displacement(rng: np.random.Generator, style: dict[str, np.ndarray], emotion: str,
                           intensity: float, cfg: StyleConfig) -> np.ndarray:
    """The displacement [len(DIMS)] of one utterance: the speaker's style, scaled, plus noise.

    ``emotion`` not in ``style`` (e.g. "other") leans toward a random emotion of the style.
    """
    if emotion in style:
        base = style[emotion]
    else:
        pick = sorted(k for k in style if k != "neutral")
        base = cfg.other_mix * style[pick[rng.integers(len(pick))]] if pick else np.zeros(len(DIMS))
    return intensity * base + rng.normal(scale=cfg.utterance_noise, size=len(DIMS))


def physical(displacement: np.ndarray) -> dict[str, float]:
    """Displacement in units of :data:`SCALE` -> named physical offsets."""
    return {name: float(v) for name, v in zip(DIMS, displacement * SCALE, strict=True)}
