"""The canonical emotion vocabulary and the one place that maps every corpus's labels onto it.

A corpus label maps to a canonical emotion, or to ``None`` when the corpus itself marks it as
"no agreement" (IEMOCAP ``xxx``, MSP-Podcast ``X``): such utterances are known, not broken, and
are excluded from the manifest and counted. A label missing from a corpus's map is unknown and
is reported as a problem.
"""

from __future__ import annotations

CANONICAL: tuple[str, ...] = (
    "neutral", "happy", "angry", "sad", "surprise", "fear", "disgust", "contempt", "calm",
    "frustrated", "other",
)
GENDERS: tuple[str, ...] = ("female", "male", "unknown")

LABEL_MAPS: dict[str, dict[str, str | None]] = {
    # Folder names, plus the Chinese words the Mandarin speakers' transcript files use.
    "esd": {
        "Neutral": "neutral", "Angry": "angry", "Happy": "happy", "Sad": "sad", "Surprise": "surprise",
        "中立": "neutral", "生气": "angry", "快乐": "happy", "伤心": "sad", "惊喜": "surprise",
    },
    # EmoEvaluation codes; excited is merged into happy as in the usual 4-class protocol.
    "iemocap": {
        "neu": "neutral", "hap": "happy", "exc": "happy", "ang": "angry", "sad": "sad",
        "fru": "frustrated", "fea": "fear", "sur": "surprise", "dis": "disgust", "oth": "other",
        "xxx": None,
    },
    # EmoClass letters of Labels/labels_consensus.csv.
    "msp_podcast": {
        "A": "angry", "S": "sad", "H": "happy", "U": "surprise", "F": "fear", "D": "disgust",
        "C": "contempt", "N": "neutral", "O": "other", "X": None,
    },
    # Emotion letter of the sentence code in the file name (S01A -> A).
    "msp_improv": {"A": "angry", "H": "happy", "S": "sad", "N": "neutral"},
    # Emotion folder names of LDC2007S09.
    "mandarin_affective": {
        "neutral": "neutral", "anger": "angry", "elation": "happy", "panic": "fear", "sadness": "sad",
    },
    # Third field of the CREMA-D file name.
    "cremad": {
        "ANG": "angry", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad",
    },
    # Third field of the RAVDESS file name.
    "ravdess": {
        "01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry", "06": "fear",
        "07": "disgust", "08": "surprise",
    },
}

# The four classes of the common IEMOCAP protocol (Paper B), after merging excited into happy.
FOUR_CLASS: tuple[str, ...] = ("neutral", "happy", "angry", "sad")


class UnknownLabel(KeyError):
    """A raw label that the corpus's map does not list."""


def canonical_emotion(corpus: str, raw_label: str) -> str | None:
    """Map ``raw_label`` of ``corpus`` to a canonical emotion (``None``: excluded by the corpus).

    Raises:
        UnknownLabel: the label is not one the corpus uses; the message lists the known ones.
    """
    table = LABEL_MAPS[corpus]
    if raw_label not in table:
        known = ", ".join(sorted(table))
        raise UnknownLabel(f"unknown {corpus} label {raw_label!r} (expected one of: {known})")
    return table[raw_label]
