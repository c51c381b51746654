"""A source corpus in CREMA-D's layout: ``AudioWAV/{actor}_{sentence}_{EMO}_{level}.wav``.

Actors from 1001 up speak CREMA-D's twelve sentences in six emotions; sentence IEO comes in three
intensity levels (LO MD HI), the others unspecified (XX), as in the real corpus. Sex is listed
in ``VideoDemographics.csv``.
"""

from __future__ import annotations

from metalearn.data.corpora.cremad import SENTENCES
from metalearn.data.synth.channel import Condition
from metalearn.data.synth.plan import CorpusPlan, SpeakerPlan, UttPlan, new_speaker, utterance_seed
from metalearn.data.synth.styles import StyleConfig

NAME = "cremad"
EMOTIONS = {"ANG": "angry", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
LEVELS = {"LO": 0.6, "MD": 1.0, "HI": 1.4}
CONDITION = Condition(snr_db=30.0, noise_colour=0.5, band_hz=(70.0, 7000.0), tilt_db_oct=-1.5,
                      level_dbfs=-26.0)


def plan(seed: int, actors: int, sentences: int, style: StyleConfig) -> CorpusPlan:
    codes = list(SENTENCES)[:sentences]
    plans, demo = [], ["ActorID,Age,Sex,Race,Ethnicity"]
    for si in range(actors):
        actor = str(1001 + si)
        gender = "male" if si % 2 == 0 else "female"
        voice, style_map = new_speaker(seed, NAME, si, gender, style)
        demo.append(f"{actor},{25 + (7 * si) % 40},{gender.capitalize()},Caucasian,Not Hispanic")
        utts, j = [], 0
        for code in codes:
            for emo, render in EMOTIONS.items():
                levels = LEVELS.items() if code == "IEO" and emo != "NEU" else [("XX", 1.0)]
                for level, intensity in levels:
                    utts.append(UttPlan(f"AudioWAV/{actor}_{code}_{emo}_{level}.wav", render, intensity,
                                        SENTENCES[code], utterance_seed(seed, NAME, si, j)))
                    j += 1
        plans.append(SpeakerPlan(actor, gender, voice, style_map, CONDITION, tuple(utts)))
    return CorpusPlan(NAME, tuple(plans), {"VideoDemographics.csv": "\n".join(demo) + "\n"}, CONDITION)
