"""A source corpus in IEMOCAP's layout: sessions of two actors, dialogs, EmoEvaluation label files.

``Session{n}/sentences/wav/{dialog}/{utt}.wav``, ``Session{n}/dialog/EmoEvaluation/{dialog}.txt``
(``[start - end]\\tUTT\\tlabel\\t[V, A, D]``) and ``Session{n}/dialog/transcriptions/{dialog}.txt``.
The speaker of an utterance is named by its last segment's letter (``Ses01F_impro01_M003`` is the
session's male actor). Labels follow IEMOCAP's own mix: neu hap exc ang sad fru, plus a few
no-agreement ``xxx``.
"""

from __future__ import annotations

import numpy as np

from metalearn.data.synth.channel import Condition
from metalearn.data.synth.plan import CorpusPlan, SpeakerPlan, UttPlan, new_speaker, utterance_seed
from metalearn.data.synth.styles import StyleConfig
from metalearn.data.synth.text import sentences

NAME = "iemocap"
# label code -> (rendered emotion, intensity, relative frequency)
LABELS = {"neu": ("neutral", 1.0, 0.22), "hap": ("happy", 0.8, 0.10), "exc": ("happy", 1.3, 0.14),
          "ang": ("angry", 1.0, 0.14), "sad": ("sad", 1.0, 0.14), "fru": ("frustrated", 1.0, 0.20),
          "xxx": ("other", 1.0, 0.06)}
CONDITION = Condition(snr_db=24.0, noise_colour=1.5, band_hz=(80.0, 6000.0), tilt_db_oct=-1.0,
                      level_dbfs=-28.0)
DIALOGS = ("impro01", "impro02", "script01_1", "script02_1")


def plan(seed: int, sessions: int, per_speaker: int, style: StyleConfig) -> CorpusPlan:
    codes = list(LABELS)
    probs = np.array([LABELS[c][2] for c in codes])
    probs /= probs.sum()
    texts = sentences(200, seed + 1)
    speakers, labels = [], {}
    for n in range(1, sessions + 1):
        lead = "F" if n % 2 else "M"
        dialog_lines: dict[str, list[str]] = {}
        trans_lines: dict[str, list[str]] = {}
        for letter, gender in (("F", "female"), ("M", "male")):
            si = 2 * (n - 1) + (letter == "M")
            voice, style_map = new_speaker(seed, NAME, si, gender, style)
            rng = np.random.default_rng([seed, 11, si])
            utts = []
            for j in range(per_speaker):
                dialog = f"Ses{n:02d}{lead}_{DIALOGS[j % len(DIALOGS)]}"
                uid = f"{dialog}_{letter}{j // len(DIALOGS):03d}"
                code = codes[rng.choice(len(codes), p=probs)]
                render, intensity, _ = LABELS[code]
                text = texts[rng.integers(len(texts))]
                utts.append(UttPlan(f"Session{n}/sentences/wav/{dialog}/{uid}.wav", render, intensity, text,
                                    utterance_seed(seed, NAME, si, j)))
                start = 3.0 * j
                vad = ", ".join(f"{v:.4f}" for v in rng.uniform(1.5, 4.5, size=3))
                dialog_lines.setdefault(dialog, []).append(
                    f"[{start:.4f} - {start + 2.5:.4f}]\t{uid}\t{code}\t[{vad}]\nC-E1:\t{code};\t()\n")
                trans_lines.setdefault(dialog, []).append(
                    f"{uid} [{start:08.4f}-{start + 2.5:08.4f}]: {text}")
            speakers.append(
                SpeakerPlan(f"Ses{n:02d}{letter}", gender, voice, style_map, CONDITION, tuple(utts)))
        header = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"
        for dialog, lines in dialog_lines.items():
            labels[f"Session{n}/dialog/EmoEvaluation/{dialog}.txt"] = header + "\n".join(lines)
            labels[f"Session{n}/dialog/transcriptions/{dialog}.txt"] = "\n".join(trans_lines[dialog]) + "\n"
    return CorpusPlan(NAME, tuple(speakers), labels, CONDITION)
