"""What to synthesise: speakers with their voices and styles, and each utterance's file and label.

A corpus layout module (``synth/layouts/*.py``) turns a size into a :class:`CorpusPlan`; the
generator renders every :class:`SpeakerPlan` in a fresh worker process and writes the label files.
Everything random is derived from ``(seed, corpus, speaker, utterance)`` so a plan, and the audio,
are the same for the same seed whatever the number of workers.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from metalearn.data.synth.channel import Condition
from metalearn.data.synth.styles import StyleConfig, sample_style
from metalearn.data.synth.voices import Voice, sample_voice


@dataclasses.dataclass(frozen=True)
class UttPlan:
    """One file to render.

    Attributes:
        rel_path: path under the corpus root.
        render: emotion whose displacement is spoken (a key of the speaker's style, or "other").
        intensity: gain on the displacement (strong vs normal intensity, excited vs happy).
        text: the words.
        seed: seeds this utterance's variation, espeak-ng's noise and the recording noise.
    """

    rel_path: str
    render: str
    intensity: float
    text: str
    seed: int


@dataclasses.dataclass(frozen=True)
class SpeakerPlan:
    """A speaker and all of their utterances in one corpus."""

    speaker: str
    gender: str
    voice: Voice
    style: dict[str, np.ndarray]
    condition: Condition
    utterances: tuple[UttPlan, ...]


@dataclasses.dataclass(frozen=True)
class CorpusPlan:
    """A whole corpus: speakers to render and label files to write (path under root -> text)."""

    name: str
    speakers: tuple[SpeakerPlan, ...]
    label_files: dict[str, str]
    condition: Condition

    @property
    def n_utterances(self) -> int:
        return sum(len(s.utterances) for s in self.speakers)


RENDERED_EMOTIONS: tuple[str, ...] = (
    "neutral", "happy", "angry", "sad", "surprise", "fear", "disgust", "contempt", "calm", "frustrated")


def speaker_rng(seed: int, corpus: str, index: int) -> np.random.Generator:
    """The random stream of speaker ``index`` of ``corpus``."""
    return np.random.default_rng([seed, _corpus_key(corpus), index])


def utterance_seed(seed: int, corpus: str, speaker_index: int, utt_index: int) -> int:
    """A 31-bit seed for one utterance."""
    ss = np.random.SeedSequence([seed, _corpus_key(corpus), speaker_index, utt_index])
    return int(ss.generate_state(1)[0] & 0x7FFFFFFF)


def _corpus_key(corpus: str) -> int:
    return int.from_bytes(corpus.encode()[:8].ljust(8, b"\0"), "little") & 0x7FFFFFFF


def new_speaker(seed: int, corpus: str, index: int, gender: str, style_cfg: StyleConfig
                ) -> tuple[Voice, dict[str, np.ndarray]]:
    """Voice and emotion style of speaker ``index`` of ``corpus`` (all rendered emotions)."""
    rng = speaker_rng(seed, corpus, index)
    voice = sample_voice(rng, gender)
    return voice, sample_style(rng, RENDERED_EMOTIONS, style_cfg)
