"""Render every utterance of one speaker into files (runs in a fresh worker process)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from metalearn.util.fileio import atomic_path
from metalearn.data.synth.channel import record
from metalearn.data.synth.espeak import Espeak
from metalearn.data.synth.plan import SpeakerPlan
from metalearn.data.synth.render import speak
from metalearn.data.synth.styles import StyleConfig, utterance_displacement


def render_speaker(root: Path, speaker: SpeakerPlan, style: StyleConfig) -> float:
    """Write ``speaker``'s utterances under ``root``; returns the seconds of audio written.

    A new engine renders the speaker: espeak-ng's flutter phase carries over between calls, so only
    a fresh engine and a fixed order give byte-identical files.
    """
    engine = Espeak()
    seconds = 0.0
    try:
        for utt in speaker.utterances:
            rng = np.random.default_rng(utt.seed)
            displacement = utterance_displacement(rng, speaker.style, utt.render, utt.intensity, style)
            wave, gain_db = speak(engine, speaker.voice, displacement, utt.text, utt.seed)
            audio = record(wave, engine.sample_rate, speaker.condition, rng, gain_db)
            with atomic_path(root / utt.rel_path) as tmp:
                sf.write(str(tmp), audio, speaker.condition.sample_rate, subtype="PCM_16", format="WAV")
            seconds += audio.shape[0] / speaker.condition.sample_rate
    finally:
        engine.close()
    return seconds
