"""Render one utterance: a speaker's voice, displaced by an emotion, spoken by espeak-ng."""

from __future__ import annotations

import numpy as np

from metalearn.data.synth.channel import spectral_tilt
from metalearn.data.synth.espeak import Espeak
from metalearn.data.synth.styles import physical
from metalearn.data.synth.voices import Voice, variant_file


def speak(engine: Espeak, voice: Voice, displacement: np.ndarray, text: str, seed: int
          ) -> tuple[np.ndarray, float]:
    """Speak ``text`` in ``voice`` displaced by ``displacement`` [len(DIMS)].

    Returns:
        (wave [T] float64 in [-1, 1] at ``engine.sample_rate`` with the emotion's spectral tilt
        applied, the emotion's loudness change in dB for the recording stage)
    """
    d = physical(displacement)
    shift = 2.0 ** (d["pitch_st"] / 12.0)
    span = (voice.pitch_high_hz - voice.pitch_low_hz) * max(0.15, 1.0 + d["range"])
    low = float(np.clip(voice.pitch_low_hz * shift, 50, 400))
    engine.set_variant("metalearn", variant_file(
        voice.gender, low, min(low + span, 600.0), voice.formant_scale,
        voice.breath + d["breath"], voice.roughness + d["roughness"], voice.flutter + d["flutter"]),
        language=voice.accent)
    engine.seed(seed)
    rate = float(np.clip(voice.rate_wpm * (1.0 + d["rate"]), 90, 350))
    wave = engine.synth(text, rate=int(round(rate)), volume=100, pitch=50, range_=50,
                        wordgap=int(round(max(d["wordgap"], 0.0))))
    wave = wave.astype(np.float64) / 32768.0
    wave = spectral_tilt(wave, engine.sample_rate, voice.tilt_db_oct + d["tilt_db_oct"])
    return wave, d["volume_db"]
