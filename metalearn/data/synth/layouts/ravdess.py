"""A source corpus in RAVDESS's layout: ``Actor_{AA}/03-01-EE-II-SS-RR-AA.wav`` at 48 kHz.

Eight emotions (neutral only at normal intensity), two intensities, two statements, two
repetitions per actor; odd actors are male, even female, as in the real corpus.
"""

from __future__ import annotations

from metalearn.data.corpora.ravdess import STATEMENTS
from metalearn.data.synth.channel import Condition
from metalearn.data.synth.plan import CorpusPlan, SpeakerPlan, UttPlan, new_speaker, utterance_seed
from metalearn.data.synth.styles import StyleConfig

NAME = "ravdess"
EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry", "06": "fear",
            "07": "disgust", "08": "surprise"}
INTENSITY = {"01": 1.0, "02": 1.5}
CONDITION = Condition(snr_db=45.0, noise_colour=1.0, band_hz=(50.0, 20000.0), level_dbfs=-25.0,
                      sample_rate=48_000)


def plan(seed: int, actors: int, repetitions: int, style: StyleConfig) -> CorpusPlan:
    plans = []
    for si in range(actors):
        aa = f"{si + 1:02d}"
        gender = "male" if (si + 1) % 2 else "female"
        voice, style_map = new_speaker(seed, NAME, si, gender, style)
        utts, j = [], 0
        for ee, render in EMOTIONS.items():
            for ii in ("01",) if ee == "01" else ("01", "02"):
                for ss, text in STATEMENTS.items():
                    for rr in range(1, repetitions + 1):
                        name = f"03-01-{ee}-{ii}-{ss}-{rr:02d}-{aa}.wav"
                        utts.append(UttPlan(f"Actor_{aa}/{name}", render, INTENSITY[ii], text,
                                            utterance_seed(seed, NAME, si, j)))
                        j += 1
        plans.append(SpeakerPlan(f"Actor_{aa}", gender, voice, style_map, CONDITION, tuple(utts)))
    return CorpusPlan(NAME, tuple(plans), {}, CONDITION)
