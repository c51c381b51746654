"""What every corpus loader shares: finding audio files, probing them, mapping labels, skipping bad ones."""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import soundfile as sf

from metalearn.data.audio import AudioError, ProblemReport, read_audio
from metalearn.data.emotions import UnknownLabel, canonical_emotion
from metalearn.data.manifest import Utterance


def audio_files(root: Path, suffix: str = ".wav") -> Iterator[Path]:
    """Every ``*.wav`` under ``root`` (any case), sorted, skipping hidden and AppleDouble ``._*`` files."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / n for n in filenames
                      if n.lower().endswith(suffix) and not n.startswith("."))
    return iter(sorted(found))


@dataclasses.dataclass(frozen=True)
class ClipInfo:
    """The manifest fields of a clip that its loader reads from file names and the corpus's tables (the emotion,
    duration and sample rate come from its label and its audio); split "" = no official split."""

    utterance_id: str
    speaker: str
    gender: str
    split: str = ""
    text: str = ""


@dataclasses.dataclass
class LoadContext:
    """Per-load state a loader uses to turn a file and its labels into an :class:`Utterance`.

    Attributes:
        corpus: the corpus name (a key of ``emotions.LABEL_MAPS``).
        report: where skipped files go (unknown label, unreadable audio, ...).
        check_audio: read every file fully (catches NaN, silence, truncation); else read headers only.
        excluded: counts of utterances left out by design (no-agreement labels, class filter).
        classes: keep only these canonical emotions (None keeps all).
        notes: counts of utterances KEPT but flagged for some consumers (MSP-Podcast's ``Unknown``
            speaker: fine for pre-finetuning, never a few-shot task).
    """

    corpus: str
    report: ProblemReport
    check_audio: bool = True
    excluded: Counter = dataclasses.field(default_factory=Counter)
    classes: tuple[str, ...] | None = None
    notes: Counter = dataclasses.field(default_factory=Counter)

    def emotion(self, raw_label: str, path: Path,
                labels: dict[str, str | None] | None = None) -> str | None:
        """Canonical emotion of ``raw_label``; None (and counted or reported) when it is not kept.

        ``labels``: the loader's own raw -> canonical map for this label source (MSP-IMPROV's perceived
        letters); None uses ``emotions.LABEL_MAPS[corpus]``.
        """
        try:
            if labels is None:
                emotion = canonical_emotion(self.corpus, raw_label)
            elif raw_label in labels:
                emotion = labels[raw_label]
            else:
                raise UnknownLabel(f"unknown {self.corpus} label {raw_label!r} "
                                   f"(expected one of: {', '.join(sorted(labels))})")
        except UnknownLabel as e:
            self.report.add(path, e.args[0])
            return None
        if emotion is None:
            self.excluded[f"label {raw_label} (no agreement)"] += 1
        elif self.classes is not None and emotion not in self.classes:
            self.excluded[f"emotion {emotion} (not in classes)"] += 1
            return None
        return emotion

    def audio_info(self, path: Path) -> tuple[float, int] | None:
        """(duration in seconds, sample rate) of ``path``, or None after reporting why it is unusable."""
        try:
            if self.check_audio:
                wave, sr = read_audio(path)
                return wave.shape[0] / sr, sr
            info = sf.info(str(path))
            if info.frames == 0:
                raise AudioError("empty (0 samples)")
            return info.frames / info.samplerate, int(info.samplerate)
        except AudioError as e:
            self.report.add(path, str(e))
        except Exception as e:  # sf.info on a broken header
            self.report.add(path, f"unreadable ({e})")
        return None

    def utterance(self, path: Path, clip: ClipInfo, raw_label: str,
                  labels: dict[str, str | None] | None = None) -> Utterance | None:
        """The manifest row for ``path`` (its ``clip`` fields, the emotion of ``raw_label``), or None when its label
        or audio is not usable.

        ``labels``: see :meth:`emotion`.
        """
        emotion = self.emotion(raw_label, path, labels)
        if emotion is None:
            return None
        info = self.audio_info(path)
        if info is None:
            return None
        return Utterance(utterance_id=clip.utterance_id, path=str(path.resolve()), corpus=self.corpus,
                         speaker=clip.speaker, gender=clip.gender, emotion=emotion, raw_label=raw_label,
                         split=clip.split, duration_s=info[0], sample_rate=info[1], text=clip.text)
