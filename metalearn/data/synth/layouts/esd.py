"""The target corpus in ESD's flat layout: ``{spk}/{Emotion}/{spk}_{idx:06d}.wav`` and ``{spk}/{spk}.txt``.

Utterance indices follow ESD's blocks of 350 per emotion (Neutral, Angry, Happy, Sad, Surprise);
inside a block the first 20 positions are the evaluation split, the next 30 test, the rest train,
so the loader derives the official split from the index. The same position carries the same
sentence in every emotion (parallel sentences). Speaker ids 0011-0020 take ESD's genders.
"""

from __future__ import annotations

from metalearn.data.corpora.esd import FEMALE
from metalearn.data.synth.channel import Condition
from metalearn.data.synth.plan import CorpusPlan, SpeakerPlan, UttPlan, new_speaker, utterance_seed
from metalearn.data.synth.styles import StyleConfig
from metalearn.data.synth.text import sentences

NAME = "esd"
EMOTIONS = (("Neutral", "neutral"), ("Angry", "angry"), ("Happy", "happy"), ("Sad", "sad"),
            ("Surprise", "surprise"))
CONDITION = Condition(snr_db=35.0, noise_colour=1.0, band_hz=(60.0, 7600.0), level_dbfs=-22.0)


def positions(n_eval: int, n_test: int, n_train: int) -> list[int]:
    """Positions (1-based, inside a 350 block) of the evaluation, test and train utterances."""
    if n_eval > 20 or n_test > 30 or n_train > 300:
        raise ValueError("ESD blocks hold at most 20 evaluation, 30 test and 300 train utterances")
    return list(range(1, n_eval + 1)) + list(range(21, 21 + n_test)) + list(range(51, 51 + n_train))


def plan(seed: int, speakers: int, n_eval: int, n_test: int, n_train: int, style: StyleConfig) -> CorpusPlan:
    if not 1 <= speakers <= 10:
        raise ValueError("the ESD-layout target holds 1 to 10 speakers (ids 0011-0020)")
    pos = positions(n_eval, n_test, n_train)
    texts = dict(zip(pos, sentences(len(pos), seed), strict=True))
    ids = [f"{11 + i:04d}" for i in range(10)]
    # Alternate genders so any number of speakers is balanced: 0011 (m), 0015 (f), 0012 (m), ...
    order = [s for pair in zip(["0011", "0012", "0013", "0014", "0020"],
                               ["0015", "0016", "0017", "0018", "0019"], strict=True) for s in pair]
    chosen = sorted(order[:speakers], key=ids.index)
    plans, labels = [], {}
    for si, spk in enumerate(chosen):
        gender = "female" if spk in FEMALE else "male"
        voice, style_map = new_speaker(seed, NAME, si, gender, style)
        utts, lines = [], []
        for block, (folder, emotion) in enumerate(EMOTIONS):
            for p in pos:
                idx = block * 350 + p
                uid = f"{spk}_{idx:06d}"
                utts.append(UttPlan(f"{spk}/{folder}/{uid}.wav", emotion, 1.0, texts[p],
                                    utterance_seed(seed, NAME, si, idx)))
                lines.append(f"{uid}\t{texts[p]}\t{folder}")
        labels[f"{spk}/{spk}.txt"] = "\n".join(lines) + "\n"
        plans.append(SpeakerPlan(spk, gender, voice, style_map, CONDITION, tuple(utts)))
    return CorpusPlan(NAME, tuple(plans), labels, CONDITION)
