"""The inputs a grid is planned and scored from, shared by the runner, ``tune`` and ``status``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from metalearn.data.manifest import Utterance
from metalearn.fewshot.episodes import Episode
from metalearn.pretune.variant import PretuneVariant
from metalearn.run.grid import Fold, Unit


@dataclass(frozen=True)
class RunInputs:
    """What a grid is planned and scored from: the target corpus's rows (outside ``speakers.exclude``), the
    folds, the pretune variants by name, each seed's episodes, the layer each (variant, fold) reads (empty:
    ``features.layer``) and the source corpora's rows whose speakers meta-train too (``meta_train.sources``)."""

    rows: list[Utterance]
    folds: list[Fold]
    variants: dict[str, PretuneVariant]
    episodes: dict[int, list[Episode]]
    layers: dict[tuple[str, int], int] = dataclasses.field(default_factory=dict)
    sources: list[Utterance] = dataclasses.field(default_factory=list)

    def table_rows(self, units: Sequence[Unit], learns: Callable[[str, int, str], bool]) -> list[Utterance]:
        """The rows a feature table of ``units`` (one variant's) needs: the target's, and the sources' when a
        unit's algorithm learns across speakers in its fold (``learns(algorithm, fold, variant)``, asked once per
        distinct triple: it builds a probe adapter)."""
        if self.sources and any(learns(*key) for key in dict.fromkeys((u.algorithm, u.fold, u.variant) for u in units)):
            return self.rows + self.sources
        return self.rows
