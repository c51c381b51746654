"""What one student episode produced: the episode, its tensors, and each algorithm's predictions."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from metalearn.data.manifest import Utterance
from metalearn.demo.layer import LayerChoice
from metalearn.fewshot.episodes import Episode


@dataclass
class AlgorithmResult:
    """One algorithm on the episode: logits [Q, W], predictions [Q], confusion [W, W] (rows true)."""

    name: str
    logits: Tensor
    predictions: Tensor
    confusion: Tensor
    correct: int
    total: int
    meta_steps: int
    seconds: float

    @property
    def accuracy(self) -> float:
        return self.correct / self.total


@dataclass
class EpisodeResult:
    """The episode, its standardised features (support_x [S, D], query_x [Q, D]) and each algorithm's result."""

    episode: Episode
    support_rows: list[Utterance]
    query_rows: list[Utterance]
    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    meta_speakers: tuple[str, ...]  # the other speakers: standardisation statistics and meta-training tasks
    algorithms: dict[str, AlgorithmResult]
    feature: LayerChoice | None = None  # the hidden state the features are, and why (None: not said)


def feature_line(result: EpisodeResult) -> str:
    """The line "features: hidden state N of the backbone, because ...", or "" when the result does not say."""
    f = result.feature
    return f"features: {f.name} of the backbone, because {f.reason}" if f else ""


def setup_lines(result: EpisodeResult, with_feature: bool = True) -> list[str]:
    """What was done before the support set was seen: the feature read (``with_feature``), the standardisation
    and any meta-training (unwrapped)."""
    meta = [a.name for a in result.algorithms.values() if a.meta_steps]
    others = len(result.meta_speakers)
    setup = [line for line in (feature_line(result),) if line and with_feature]
    setup.append(f"features z-scored with the statistics of the {others} other speakers" if others
                 else "features not standardised (no other speakers)")
    if meta:
        steps = ", ".join(f"{n} ({result.algorithms[n].meta_steps} steps)" for n in meta)
        setup.append(f"meta-trained on the other speakers' tasks: {steps}")
    return setup
