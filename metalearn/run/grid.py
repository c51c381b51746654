"""The grid of a run as a fixed list of work units, and its deterministic split into shards.

A unit is one batch of episodes scored by one algorithm after one meta-training:
(pretune variant, seed, fold, algorithm, meta_k, meta_seed, batch). The list depends only on the config and the
saved episodes, never on what has already run, so shard ``i`` of ``n`` (every n-th unit) is the same on
any machine and the n shards together are exactly the whole grid.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from metalearn.fewshot.episodes import Episode, Skipped
from metalearn.fewshot.trials import TrialKey, group_by_shape, make_trial_key
from metalearn.util.errors import MetalearnError


@dataclass(frozen=True)
class Unit:
    """One batch of episodes for one (variant, seed, fold, algorithm, meta-training shots, meta-training seed)."""

    variant: str
    seed: int
    fold: int
    algorithm: str
    meta_k: int          # the shots meta-training used (0: the algorithm is not meta-trained per k)
    episodes: tuple[Episode, ...]
    meta_seed: int = 0   # which of ``meta_train.seeds`` meta-trained it (0: methods meta-trained never)

    @property
    def group(self) -> tuple[str, int, int, str, int, int]:
        """Units of one group share one meta-trained adapter."""
        return self.variant, self.seed, self.fold, self.algorithm, self.meta_k, self.meta_seed

    def trial_key(self, e: Episode) -> TrialKey:
        """The key of episode ``e``'s trial in this unit (:func:`metalearn.fewshot.trials.make_trial_key`)."""
        return make_trial_key(self.variant, self.algorithm, e.episode_id, self.seed, self.meta_seed)


OnSkip = Callable[["Unit", list[Skipped]], None]  # what scoring calls with a unit's episodes that cannot be scored:
                                                  # the runner writes one skip record each


@dataclass(frozen=True)
class Subset:
    """A part of the grid: only these ks, the first ``repetitions`` repetitions, these variants (None: all);
    ``zero``: also the k = 0 point, each smallest-k episode without its support (:func:`without_support`)."""

    ks: frozenset[int] | None = None
    repetitions: int | None = None
    variants: frozenset[str] | None = None
    zero: bool = False

    def has(self, e: Episode) -> bool:
        return (self.ks is None or e.k in self.ks) and (self.repetitions is None or e.repetition < self.repetitions)


def assign_folds(speakers: Sequence[str], folds: int, seed: int, test: Sequence[str] | None = None
                 ) -> list[list[str]]:
    """Test speakers of each fold: ``test`` as the one fold, else ``folds`` seeded, near-equal parts.

    Every speaker is in exactly one fold; a fold's meta-training speakers are all the others.
    """
    speakers = sorted(speakers)
    if test is not None:
        unknown = sorted(set(test) - set(speakers))
        if unknown:
            raise MetalearnError(f"config key 'speakers.test': {unknown} are not speakers of the target corpus "
                                 f"(have: {', '.join(speakers)})")
        return [sorted(test)]
    if not 1 <= folds <= len(speakers):
        raise MetalearnError(f"config key 'speakers.folds': {folds} folds for {len(speakers)} speakers")
    if folds == 1:
        return [speakers]
    order = np.random.default_rng(seed).permutation(len(speakers))
    return [sorted(speakers[i] for i in part) for part in np.array_split(order, folds)]


@dataclass(frozen=True)
class Fold:
    """One fold's speakers, pairwise disjoint: scored (test), for choices and tuning (validation), and the
    only speakers anything is learned from across speakers (meta_train: meta-training, standardisation).

    ``meta_train_sources``: source corpus -> its speakers whose tasks meta-training also uses
    (``meta_train.sources``; never tested, never standardize the target's features); empty when none.
    """

    fold: int
    test: tuple[str, ...]
    validation: tuple[str, ...]
    meta_train: tuple[str, ...]
    meta_train_sources: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict, hash=False)


def three_way_folds(speakers: Sequence[str], folds: int, seed: int, test: Sequence[str] | None = None,
                    validation: int = 0) -> list[Fold]:
    """Each fold's test speakers (:func:`assign_folds`, unchanged by ``validation``), then ``validation`` of the
    other speakers drawn with the fold's seed (``[seed, fold]``); the rest meta-train.

    With ``validation=0`` the folds are exactly the two-way folds of before (no validation speakers). A fold
    with no other speakers (one fold of every speaker) has none to draw from and gets none.
    """
    if validation < 0:
        raise MetalearnError(f"config key 'speakers.validation': {validation} must be >= 0")
    out = []
    for f, tested in enumerate(assign_folds(speakers, folds, seed, test)):
        rest = sorted(set(speakers) - set(tested))
        if rest and validation >= len(rest):
            raise MetalearnError(f"config key 'speakers.validation': {validation} validation speakers leave fold {f} "
                                 f"no meta-training speaker (it has {len(rest)} non-test speakers: {', '.join(rest)})")
        drawn = np.random.default_rng([seed, f]).choice(len(rest), size=min(validation, len(rest)), replace=False)
        chosen = {rest[i] for i in drawn}
        out.append(Fold(f, tuple(tested), tuple(sorted(chosen)), tuple(s for s in rest if s not in chosen)))
    return out


def without_support(episodes: Sequence[Episode]) -> list[Episode]:
    """The k = 0 episodes: per (speaker, target, repetition), its smallest-k episode with no support set, the
    same query and validation sets, k = 0 and the id's ``/k<k>/`` part written ``/k0/``."""
    first: dict[tuple[str, str, int], Episode] = {}
    for e in episodes:
        key = (e.speaker, e.target_emotion, e.repetition)
        if key not in first or e.k < first[key].k:
            first[key] = e
    return [dataclasses.replace(e, episode_id=re.sub(r"/k\d+/", "/k0/", e.episode_id, count=1), k=0, support=(),
                                support_labels=(), support_sentences=()) for e in first.values()]


@dataclass(frozen=True)
class Batching:
    """How a grid's episodes become units.

    Attributes:
        chunk: episodes per batch.
        per_k: algorithms meta-trained once per k (their units carry meta_k = k; others 0).
        only: algorithm -> the part of the grid it runs on (the rest: every episode of every variant).
        slow: algorithms with a slow per-episode path -> their episodes per unit (1: a kill loses one episode;
            full_finetune's ``episodes_per_pass`` adapts more together).
        meta_seeds: (algorithm, fold, variant) -> the meta-training seeds its units are planned for (None: [0]).
    """

    chunk: int
    per_k: Sequence[str] = ()
    only: dict[str, Subset] = dataclasses.field(default_factory=dict)
    slow: Mapping[str, int] = dataclasses.field(default_factory=dict)
    meta_seeds: Callable[[str, int, str], Sequence[int]] | None = None


def plan_units(variants: Sequence[str], seeds: Sequence[int], folds: Sequence[Sequence[str]],
               algorithms: Sequence[str], episodes: dict[int, list[Episode]], batching: Batching) -> list[Unit]:
    """Every unit of the grid, in a fixed order (with one meta seed, the order without ``meta_seeds``).

    ``folds``: per fold, the speakers scored (a run: its test speakers; tuning: its validation speakers);
    ``episodes``: seed -> that seed's evaluation episodes.
    """
    only, per_k, slow, chunk = batching.only, batching.per_k, batching.slow, batching.chunk
    meta_seeds = batching.meta_seeds or (lambda algorithm, fold, variant: (0,))
    units = []
    for variant in variants:
        for seed in seeds:
            for f, test in enumerate(folds):
                mine = [e for e in episodes[seed] if e.speaker in set(test)]
                for algorithm in algorithms:
                    part = only.get(algorithm, Subset())
                    if part.variants is not None and variant not in part.variants:
                        continue
                    chosen = [e for e in mine if part.has(e)]
                    if part.zero:
                        chosen = [z for z in without_support(mine)
                                  if part.repetitions is None or z.repetition < part.repetitions] + chosen
                    size = slow.get(algorithm, chunk)
                    for meta_k, group in _by_meta_k(chosen, algorithm in per_k):
                        batches = group_by_shape(group, size)
                        units += [Unit(variant, seed, f, algorithm, meta_k, tuple(b), meta_seed)
                                  for meta_seed in meta_seeds(algorithm, f, variant) for b in batches]
    return units


def _by_meta_k(episodes: list[Episode], per_k: bool) -> list[tuple[int, list[Episode]]]:
    if not per_k:
        return [(0, episodes)] if episodes else []
    return [(k, [e for e in episodes if e.k == k]) for k in sorted({e.k for e in episodes})]


def parse_shard(spec: str) -> tuple[int, int]:
    """``"i/n"`` (1-based, as SLURM array indices are usually written) -> (i - 1, n)."""
    try:
        i, n = (int(v) for v in spec.split("/"))
    except ValueError:
        raise MetalearnError(f"--shard {spec!r}: expected I/N, e.g. 2/4") from None
    if not 1 <= i <= n:
        raise MetalearnError(f"--shard {spec!r}: need 1 <= I <= N")
    return i - 1, n


def shard_units(units: Sequence[Unit], index: int, count: int) -> list[Unit]:
    """Shard ``index`` (0-based) of ``count``: every count-th unit, starting at ``index``."""
    return list(units[index::count])
