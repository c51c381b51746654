"""The order and pace of training: which corpus each step draws (:class:`ProportionalCorpusSampler`, Paper A's
one corpus per batch in proportion to its size, DDP-aware), the learning-rate schedule and early stopping (as the
Hugging Face Trainer the paper used does them)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping

import numpy as np


@dataclasses.dataclass
class EarlyStopping:
    """Early stopping as the Hugging Face Trainer does it (EarlyStoppingCallback + load_best_model_at_end).

    An epoch counts as "bad" unless its value beats the best so far by more than ``min_delta``; training
    stops after ``patience`` bad epochs in a row (0 disables stopping). The best state is the strict
    maximum, so a small improvement is kept as the best state while still counting as bad.
    """

    patience: int
    min_delta: float
    best: float = -math.inf
    bad_epochs: int = 0

    def update(self, value: float) -> bool:
        """Record one epoch's value; True when it is the new best (the state to keep)."""
        self.bad_epochs = 0 if value > self.best + self.min_delta else self.bad_epochs + 1
        if value > self.best:
            self.best = value
            return True
        return False

    @property
    def stop(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience


def linear_warmup_decay(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """LR multiplier: 0 -> 1 over ``warmup_steps``, then 1 -> 0 at ``total_steps`` (transformers' linear)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


class ProportionalCorpusSampler:
    """An endless, seeded stream of ``(corpus, indices)`` training batches.

    Every global batch holds ``batch_size`` indices into ONE corpus's training list; the corpus of each
    step is drawn with probability ``size / total``. Inside a corpus, indices follow a seeded permutation
    that is redrawn when exhausted (so every utterance is seen once per pass over that corpus).

    With ``world_size`` W and ``rank`` r every rank draws the same global sequence (the generator is
    seeded identically and consumed identically) and yields only its share ``global[r::W]``.

    Args:
        sizes: corpus -> number of training utterances (> 0).
        batch_size: global batch size (>= world_size so that no rank gets an empty share).
        seed: the whole sequence is a function of (sizes, batch_size, seed).
    """

    def __init__(self, sizes: Mapping[str, int], batch_size: int, seed: int = 0,
                 world_size: int = 1, rank: int = 0) -> None:
        if not sizes or min(sizes.values()) <= 0:
            raise ValueError(f"every corpus needs training utterances, got sizes {dict(sizes)}")
        if batch_size < world_size:
            raise ValueError(f"global batch_size {batch_size} is smaller than world_size {world_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        self.corpora = sorted(sizes)
        self.sizes = {c: int(sizes[c]) for c in self.corpora}
        self.batch_size = batch_size
        self.seed = seed
        self.world_size = world_size
        self.rank = rank

    @property
    def probabilities(self) -> dict[str, float]:
        """corpus -> probability that a step draws from it (size / total)."""
        total = sum(self.sizes.values())
        return {c: n / total for c, n in self.sizes.items()}

    def global_batches(self) -> Iterator[tuple[str, list[int]]]:
        """The endless global sequence: (corpus, batch_size indices into its training list)."""
        rng = np.random.default_rng(self.seed)
        p = np.array([self.probabilities[c] for c in self.corpora])
        orders: dict[str, list[int]] = {c: [] for c in self.corpora}
        pos = {c: 0 for c in self.corpora}
        while True:
            corpus = self.corpora[int(rng.choice(len(self.corpora), p=p))]
            batch: list[int] = []
            while len(batch) < self.batch_size:
                if pos[corpus] == len(orders[corpus]):
                    orders[corpus], pos[corpus] = rng.permutation(self.sizes[corpus]).tolist(), 0
                end = pos[corpus] + self.batch_size - len(batch)
                batch += orders[corpus][pos[corpus] : end]
                pos[corpus] = min(end, len(orders[corpus]))
            yield corpus, batch

    def __iter__(self) -> Iterator[tuple[str, list[int]]]:
        """This rank's share of each global batch: (corpus, global_indices[rank::world_size])."""
        for corpus, batch in self.global_batches():
            yield corpus, batch[self.rank :: self.world_size]


class KeyedBatches:
    """Adapts a sampler for ``DataLoader(batch_sampler=...)``: each batch a list of (corpus, index) keys."""

    def __init__(self, sampler: ProportionalCorpusSampler) -> None:
        self.sampler = sampler

    def __iter__(self) -> Iterator[list[tuple[str, int]]]:
        for corpus, indices in self.sampler:
            yield [(corpus, i) for i in indices]
