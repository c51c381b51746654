"""The features a trial reads: one row per utterance, the matrix, the index from utterance key to row, and
what the features are (which hidden state of which variant)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property

from torch import Tensor

from metalearn.data.manifest import Utterance, utterance_key


@dataclass(frozen=True)
class FeatureTable:
    """``x[i]`` [D] is the feature of ``rows[i]``; ``x`` is [N, D] with N = len(rows).

    ``layer`` names the feature as trial records do: a hidden state index ("0".."L"), "mean" (every state
    averaged) or "clap" (a CLAP variant's own audio embedding). ``variant`` is the pretune variant whose
    features these are.
    """

    rows: list[Utterance]
    x: Tensor
    layer: str
    variant: str

    def __post_init__(self) -> None:
        if self.x.ndim != 2 or self.x.shape[0] != len(self.rows):
            raise ValueError(f"features {tuple(self.x.shape)} for {len(self.rows)} rows; expected [N, D]")

    @cached_property
    def index_of(self) -> dict[str, int]:
        """Utterance key -> its row of ``x``."""
        return {utterance_key(u): i for i, u in enumerate(self.rows)}

    @property
    def dim(self) -> int:
        return int(self.x.shape[1])

    def with_x(self, x: Tensor) -> FeatureTable:
        """The same rows with other features of them (e.g. standardized), [N, D']."""
        return dataclasses.replace(self, x=x)
