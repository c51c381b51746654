"""The one interface every adaptation method implements, so one loop scores them all.

Shapes: E episodes, S support items, Q query items, V validation items, D embedding size,
W ways (classes). Labels are ints in 0..W-1; an episode's class order is ``Episode.classes``.
Query (and validation) sets may be padded to a common size across a batch of episodes: every
method here scores query items independently, so padded rows are simply ignored by the caller.

A method declares what it needs as class attributes of :class:`AdapterBase` (``inputs``,
``needs_prior``, ``uses_support``, ``per_episode``, ``meta_learns``, ``options_like``); the runner reads the
declarations and provides the inputs (and options) in an :class:`AdapterSpec`, never branching on a method's name.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

from torch import Tensor

from metalearn.fewshot.algorithms.functional import Params
from metalearn.fewshot.algorithms.rows import RowIndex


class TaskSampler(Protocol):
    """Random training tasks for meta-training, drawn from the meta-training speakers only."""

    ways: int
    shots: int
    queries: int

    def sample(self, n_episodes: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(support_x [E, S, D], support_y [E, S], query_x [E, Q, D], query_y [E, Q]).

        S = ways * shots for N-way tasks; for the binary protocol S = shots, Paper A's total k.
        Methods read S and Q from the shapes.
        """
        ...


@dataclass(frozen=True)
class AudioInputs:
    """What a method that adapts the backbone itself needs to read the run's feature from audio.

    backbone: () -> a SpeechBackbone holding the pretune variant's weights; paths: utterance key -> audio file;
    layer: the feature every other method reads (the FeatureTable's ``layer``: a state index "0".."L", or an int,
    negative from the end; "mean", "mix" or "clap" name features a method may refuse); standardizer: the
    fold's per-dimension z-score of that feature (``shift``, ``scale`` [D]; None: none); max_seconds and
    precision: the embedding cache's crop and autocast precision, so the pooled state is the cache's.
    """

    backbone: Callable[[], Any]
    paths: Mapping[str, str | os.PathLike]
    layer: str | int = -1
    standardizer: Any = None                     # a metalearn.features.featurize.Standardizer, or None
    max_seconds: float | None = None
    precision: str = "fp32"


@dataclass(frozen=True)
class AdapterSpec:
    """Everything a method may be built from; the runner fills the optional parts a method declares it needs.

    prior: a CLAP variant's prompt head over the (standardized) features, weight [D, W] and bias [W]
        (``needs_prior``); audio: the backbone and clip paths (``inputs == "audio"``).
    """

    dim: int
    ways: int
    seed: int = 0
    device: str = "cpu"
    prior: Params | None = None
    audio: AudioInputs | None = None


@dataclass(frozen=True)
class EpisodeBatch:
    """Episodes of one shape and their tensors (see :func:`metalearn.fewshot.tasks.episode_tensors`).

    support_x [E, S, D], support_y [E, S], query_x [E, Q, D], query_y [E, Q] (-1 = padding),
    query_mask [E, Q]; val_x [E, V, D] and val_y [E, V] or None. The ``*_x`` tensors are None for methods
    whose ``inputs`` are audio: they read the clips of ``episodes`` themselves. For a method that declares
    ``reads_rows``, query_x and val_x are :class:`~metalearn.fewshot.algorithms.rows.RowIndex` es (the same
    rows, gathered as the method reads them).
    """

    episodes: Sequence[Any]
    ways: int
    support_y: Tensor
    query_y: Tensor
    query_mask: Tensor
    support_x: Tensor | None = None
    query_x: Tensor | RowIndex | None = None
    val_x: Tensor | RowIndex | None = None
    val_y: Tensor | None = None


@runtime_checkable
class Adapter(Protocol):
    """An adaptation method. ``meta_train`` is a no-op for methods that do not meta-learn."""

    name: str
    meta_learns: bool  # False when meta_train learns nothing (the runner then skips building a task sampler)

    def meta_train(self, sampler: TaskSampler, steps: int) -> None:
        """Learn the meta-parameters on ``steps`` batches of tasks from ``sampler``."""
        ...

    def score(self, batch: EpisodeBatch) -> Tensor:
        """Adapt to each episode's support set and score its queries: logits [E, Q, W]."""
        ...


class AdapterBase:
    """Declarations and defaults shared by every method; a method overrides what differs.

    ``predict(support_x, support_y, query_x, ways, val_x=None, val_y=None) -> logits [E, Q, W]`` is the
    tensor-level entry of every method on embeddings: support_x [E, S, D], support_y [E, S] ints,
    query_x [E, Q, D]; val_x, val_y [E, V, D], [E, V]: optional model-selection data (methods with no
    choice to make ignore them).
    """

    name: str
    meta_learns: bool = False
    inputs: ClassVar[str] = "embeddings"   # "embeddings" (cached features) or "audio" (clips + the backbone)
    needs_prior: ClassVar[bool] = False     # a CLAP variant's prompt prior: runs only on CLAP variants
    uses_support: ClassVar[bool] = True     # False: scored once per episode set, recorded as the k = 0 point
    per_episode: ClassVar[bool] = False     # slow: the grid gives it one episode per unit (a kill loses one)
    trains_on: ClassVar[str] = "tasks"      # what meta_train samples: "tasks" (episodes) or "labels" (labelled clips)
    zero_point: ClassVar[bool] = False      # also scored with no support at all, as its k = 0 point (transfer)
    reads_rows: bool = False                # True: query_x and val_x arrive as RowIndexes (it gathers them itself)
    options_like: ClassVar[str] = ""        # an algorithm whose fold-tuned values this one takes, under its own
                                            # tuned values (its config has that algorithm's fields)

    @classmethod
    def from_spec(cls, spec: AdapterSpec, cfg: object) -> AdapterBase:
        """Build from the runner's spec; the default constructor is ``cls(dim, cfg, seed, device)``."""
        return cls(spec.dim, cfg, spec.seed, spec.device)

    def meta_train(self, sampler: TaskSampler, steps: int) -> None:
        """Nothing to learn (methods that meta-learn override this)."""

    def score(self, batch: EpisodeBatch) -> Tensor:
        """logits [E, Q, W] of the batch's queries, through :meth:`predict`."""
        return self.predict(batch.support_x, batch.support_y, batch.query_x, batch.ways, batch.val_x, batch.val_y)
