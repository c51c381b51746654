"""A source corpus in MSP-Podcast's layout: ``Audios/*.wav`` and ``Labels/labels_consensus.csv``.

Many speakers with few utterances each, a podcast channel (band-limited, noisier), consensus
labels ``EmoClass`` (A S H U C N, a few O and X), speaker-disjoint ``Split_Set`` (Train,
Development, Test1).
"""

from __future__ import annotations

import numpy as np

from metalearn.data.synth.channel import Condition
from metalearn.data.synth.plan import CorpusPlan, SpeakerPlan, UttPlan, new_speaker, utterance_seed
from metalearn.data.synth.styles import StyleConfig
from metalearn.data.synth.text import sentences

NAME = "msp_podcast"
# EmoClass -> (rendered emotion, relative frequency, arousal, valence)
CLASSES = {"N": ("neutral", 0.30, 3.5, 4.0), "H": ("happy", 0.18, 4.8, 5.5), "A": ("angry", 0.12, 5.5, 2.5),
           "S": ("sad", 0.12, 2.5, 2.5), "U": ("surprise", 0.08, 5.0, 4.5), "C": ("contempt", 0.08, 4.0, 3.0),
           "O": ("other", 0.06, 4.0, 4.0), "X": ("other", 0.06, 4.0, 4.0)}
CONDITION = Condition(snr_db=18.0, noise_colour=1.0, band_hz=(150.0, 3800.0), tilt_db_oct=0.5,
                      level_dbfs=-20.0)
COLUMNS = "FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set"


def split_of(index: int, n: int) -> str:
    """Speaker-disjoint split: the first 70% of speakers Train, then 15% Development, then Test1."""
    frac = index / n
    return "Train" if frac < 0.7 else "Development" if frac < 0.85 else "Test1"


def plan(seed: int, speakers: int, per_speaker: int, style: StyleConfig) -> CorpusPlan:
    codes = list(CLASSES)
    probs = np.array([CLASSES[c][1] for c in codes])
    probs /= probs.sum()
    texts = sentences(300, seed + 2)
    plans, rows = [], [COLUMNS]
    for si in range(speakers):
        gender = "female" if si % 2 else "male"
        voice, style_map = new_speaker(seed, NAME, si, gender, style)
        rng = np.random.default_rng([seed, 12, si])
        spkr_id = str(100 + 7 * si)
        utts = []
        for j in range(per_speaker):
            uid = f"MSP-PODCAST_{1000 + si:04d}_{j + 1:04d}"
            code = codes[rng.choice(len(codes), p=probs)]
            render, _, act, val = CLASSES[code]
            utts.append(UttPlan(f"Audios/{uid}.wav", render, 1.0, texts[rng.integers(len(texts))],
                                utterance_seed(seed, NAME, si, j)))
            act, val, dom = (float(np.clip(v + rng.normal(0, 0.6), 1, 7)) for v in (act, val, act))
            rows.append(f"{uid}.wav,{code},{act:.1f},{val:.1f},{dom:.1f},{spkr_id},"
                        f"{gender.capitalize()},{split_of(si, speakers)}")
        plans.append(SpeakerPlan(spkr_id, gender, voice, style_map, CONDITION, tuple(utts)))
    return CorpusPlan(NAME, tuple(plans), {"Labels/labels_consensus.csv": "\n".join(rows) + "\n"}, CONDITION)
