"""Corpus sizes for the synthesiser: ``tiny`` for tests (seconds), ``demo`` the embedded default."""

from __future__ import annotations

import dataclasses

from metalearn.data.synth.styles import StyleConfig


@dataclasses.dataclass(frozen=True)
class Preset:
    """Sizes of the five corpora (arguments of each layout's ``plan``) and the emotion style.

    Attributes:
        esd: (speakers, evaluation, test, train utterances per emotion) of the target.
        iemocap: (sessions of two actors, utterances per actor).
        msp_podcast: (speakers, utterances per speaker).
        cremad: (actors, sentences out of twelve).
        ravdess: (actors, repetitions).
    """

    esd: tuple[int, int, int, int]
    iemocap: tuple[int, int]
    msp_podcast: tuple[int, int]
    cremad: tuple[int, int]
    ravdess: tuple[int, int]
    style: StyleConfig = StyleConfig()


PRESETS: dict[str, Preset] = {
    "tiny": Preset(esd=(4, 2, 3, 5), iemocap=(1, 8), msp_podcast=(4, 4), cremad=(2, 2), ravdess=(2, 1)),
    "demo": Preset(esd=(10, 6, 12, 16), iemocap=(5, 60), msp_podcast=(40, 15), cremad=(20, 12),
                   ravdess=(10, 1)),
}
