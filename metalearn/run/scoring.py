"""Scoring the grid's units: per group, standardize on the meta-training speakers, build the algorithm from
what it declares it needs, meta-train it once, then score each unit's episodes with the one trial engine.

The runner never branches on an algorithm's name: it reads the adapter class's declarations
(:class:`metalearn.fewshot.algorithms.base.AdapterBase`) and provides a prompt prior, audio inputs,
meta-training tasks or labelled clips (``trains_on``) accordingly. Only the fold's meta-training speakers
are learned from (standardisation, meta-training, training); its validation and test speakers never are.

:func:`score_units` runs a shard's units group by group, side by side in ``workers`` forked processes. Most
of a run's groups are small tensor operations (meta-training heads, fine-tuning heads) that a second OpenMP
thread barely speeds up (results/bench_threads.md); ``workers`` processes of one thread each keep every core
on useful work (results/bench_workers.md). The units run block by block, one (variant, feature) at a time: a
block's features are read once here, its groups are forked out (:func:`metalearn.util.workers.run_forked`; the
slowest kinds first, :func:`slowest_first`), and their records come back to this process, which alone writes the
trial and skip logs as each group comes back (a kill loses the groups in flight, which a resumed run scores
again). Groups whose every trial is a copy of an earlier variant's (:class:`metalearn.run.reuse.Reuse`) are
copied here, never forked. With ``workers = 1`` the groups run here, one after another, in plan order, each unit
logged as it is scored (a kill loses one batch at most: what a GPU run, always one worker, needs).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import groupby

import numpy as np

from metalearn.data.manifest import utterance_key
from metalearn.data.sentences import sentence_key
from metalearn.features.featurize import Standardizer
from metalearn.features.table import FeatureTable
from metalearn.fewshot.algorithms import (
    AdapterBase,
    AdapterSpec,
    AudioInputs,
    TaskSampler,
    adapter_class,
    build_adapter,
)
from metalearn.fewshot.algorithms.transfer import LabelledClips
from metalearn.fewshot.episodes import Episode, Skipped
from metalearn.fewshot.tasks import SpeakerTaskSampler, TaskRows, TaskSpec
from metalearn.fewshot.trials import TrialTags, run_trials
from metalearn.pretune.variant import PretuneVariant
from metalearn.run.config import ExperimentConfig
from metalearn.run.grid import Fold, OnSkip, Unit
from metalearn.run.inputs import RunInputs
from metalearn.run.planning import learns_across_speakers
from metalearn.run.reuse import Reuse, features_digest
from metalearn.run.stages import variant_features
from metalearn.run.tuned import meta_steps_for, options_for, tuned_values
from metalearn.util.errors import MetalearnError
from metalearn.util.workers import run_forked, usable_workers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupInputs:
    """What every unit of one group is built and scored from.

    ``table``: the variant's features, standardized with the fold's meta-training speakers' statistics
    (``standardizer``); ``train_rows``: the rows of ``table`` of those (target) speakers; ``source_rows``: the rows
    of the fold's source speakers (``Fold.meta_train_sources``). Only these two are ever learned from.
    """

    cfg: ExperimentConfig
    variant: PretuneVariant
    table: FeatureTable
    train_rows: np.ndarray
    standardizer: Standardizer
    fold: int
    source_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def group_inputs(cfg: ExperimentConfig, variant: PretuneVariant, table: FeatureTable, fold: Fold) -> GroupInputs:
    """The fold's inputs: ``table`` standardized on the fold's meta-training speakers of the target corpus
    (``features.standardize``; the source speakers meta-train but never shift the target's statistics)."""
    target, learn = cfg.data.target.corpus, set(fold.meta_train)
    sources = {(c, s) for c, speakers in fold.meta_train_sources.items() for s in speakers}
    train_rows = np.array([i for i, u in enumerate(table.rows) if u.corpus == target and u.speaker in learn],
                          dtype=np.int64)
    source_rows = np.array([i for i, u in enumerate(table.rows) if (u.corpus, u.speaker) in sources], dtype=np.int64)
    standardizer = Standardizer.identity(table.dim)
    if cfg.features.standardize and len(train_rows):
        standardizer = Standardizer.fit(table.x, train_rows)
        table = table.with_x(standardizer.apply(table.x))
    return GroupInputs(cfg, variant, table, train_rows, standardizer, fold.fold, source_rows)


def score_group(cfg: ExperimentConfig, units: list[Unit], variant: PretuneVariant, table: FeatureTable,
                folds: list[Fold], on_skip: OnSkip | None = None) -> Iterator[tuple[Unit, list[dict]]]:
    """Build (and meta-train) the group's adapter once, then score each unit (one batch of episodes).

    ``units`` share one group (variant, seed, fold, algorithm, meta_k, meta_seed); ``table`` holds the
    variant's features [N, D], which the fold's meta-training speakers standardize. Episodes with a clip
    that has no embedding are not scored: they go to ``on_skip`` (default: a warning).
    """
    pretune, seed, fold, algorithm, meta_k, meta_seed = units[0].group  # the units' variant: ``pretune``
    inputs = group_inputs(cfg, variant, table, folds[fold])
    tags = TrialTags(cfg.name, pretune, seed, meta_seed, table.layer, table.variant)
    adapter = None
    for unit in units:
        episodes, lost = usable(unit.episodes, table.index_of)
        if lost:
            (on_skip or _warn)(unit, lost)
        if not episodes:
            continue
        adapter = adapter or build_for(inputs, algorithm, episodes[0], meta_k,
                                       derived_seed(seed, fold, meta_k, meta_seed))
        yield unit, run_trials(adapter, episodes, inputs.table.x, table.index_of, tags, chunk=len(episodes),
                               per_query=True)


def usable(episodes: Sequence[Episode], index_of: dict[str, int]) -> tuple[list[Episode], list[Skipped]]:
    """(episodes whose every utterance has an embedding, the skip records of the others): a clip whose file
    became unreadable after the manifest was written has none, and the reason names it."""
    keep, lost = [], []
    for e in episodes:
        missing = next((k for k in (*e.support, *e.query, *e.validation) if k not in index_of), None)
        if missing is None:
            keep.append(e)
        else:
            lost.append(Skipped.of(e, f"no embedding for {missing} (unreadable file)"))
    return keep, lost


def _warn(unit: Unit, lost: list[Skipped]) -> None:
    for s in lost:
        log.warning("episode %s: %s; skipped", s.episode_id, s.reason)


def derived_seed(seed: int, fold: int, meta_k: int, meta_seed: int = 0) -> int:
    """The adapter's seed for one (run seed, fold, meta-training shots, meta-training seed); meta seed 0 keeps
    the entropy (seed, fold, meta_k), so a run with one meta seed draws what a run without meta seeds drew."""
    entropy = [seed, fold, meta_k] if meta_seed == 0 else [seed, fold, meta_k, meta_seed]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def build_for(inputs: GroupInputs, algorithm: str, example: Episode, meta_k: int, seed: int) -> AdapterBase:
    """The algorithm built for the episodes' shape from what it declares it needs (with the fold's tuned
    values), meta-trained when it meta-learns (on ``inputs.train_rows``, the fold's meta-training speakers, only)."""
    cfg, variant, table = inputs.cfg, inputs.variant, inputs.table
    cls = adapter_class(algorithm)
    prior = None
    if cls.needs_prior:  # the variant's prompt head, carried through the standardisation of the features
        raw = variant.prompt_prior(example.classes)
        weight, bias = inputs.standardizer.carry_head(raw["weight"], raw["bias"])
        prior = {"weight": weight, "bias": bias}
    audio = None
    if cls.inputs == "audio":  # the group's feature (state, standardisation, crop), read from audio
        audio = AudioInputs(variant.load_backbone, {utterance_key(u): u.path for u in table.rows}, table.layer,
                            inputs.standardizer, cfg.embeddings.max_seconds, cfg.embeddings.precision)
    spec = AdapterSpec(table.dim, len(example.classes), seed, cfg.device, prior, audio)
    options = options_for(cfg, algorithm, inputs.fold, variant.name)
    if cls.options_like:  # full_finetune: finetune's tuned values, then its own (it nests)
        options.update({**tuned_values(cfg, cls.options_like, inputs.fold, variant.name),
                        **tuned_values(cfg, algorithm, inputs.fold, variant.name)})
    adapter = build_adapter(algorithm, spec, options)
    steps = meta_steps_for(cfg, algorithm, inputs.fold, variant.name)
    if not adapter.meta_learns or steps == 0:
        return adapter
    if not len(inputs.train_rows):
        raise MetalearnError(f"algorithm {algorithm} meta-learns but fold has no meta-training speakers "
                             f"(set speakers.folds >= 2 or name speakers.test)")
    adapter.meta_train(training_data(inputs, cls, example, meta_k, seed + 1), steps)
    return adapter


def training_data(inputs: GroupInputs, cls: type[AdapterBase], example: Episode, meta_k: int, seed: int
                  ) -> TaskSampler:
    """What the class learns from across speakers (``inputs.train_rows`` and ``inputs.source_rows`` only):
    labelled clips of the episode's emotions (``trains_on = "labels"``), or meta-training tasks of ``meta_k`` (or
    ``meta_train.shots``, or the episode's k) shots: a target speaker's over the episode's emotions, a source
    speaker's over its own (its label positions are drawn per task, like every task's)."""
    cfg, x, rows = inputs.cfg, inputs.table.x, inputs.table.rows
    binary = example.protocol == "binary"
    keep = [i for i in inputs.train_rows if binary or rows[i].emotion in example.classes]
    if cls.trains_on == "labels":
        keep += [i for i in inputs.source_rows if rows[i].emotion in example.classes]
        return LabelledClips(x[keep], [rows[i].emotion for i in keep], seed)
    keep += list(inputs.source_rows)
    target = cfg.data.target.corpus  # a source speaker is named with its corpus: ids of two corpora may clash
    speaker = [rows[i].speaker if rows[i].corpus == target else f"{rows[i].corpus}/{rows[i].speaker}" for i in keep]
    shots = meta_k or cfg.meta_train.shots or example.k
    task_rows = TaskRows([rows[i].emotion for i in keep], speaker, sentences=[sentence_key(rows[i]) for i in keep],
                         splits=[rows[i].split for i in keep])
    task = TaskSpec(len(example.classes), shots, cfg.meta_train.queries, example.protocol,
                    disjoint=cfg.episodes.disjoint)
    return SpeakerTaskSampler(x[keep], task_rows, sorted(set(speaker)), task, seed, cfg.device)


# ------------------------------------------------------------------------ the units, side by side

Scored = list[tuple[int, list[dict], list[Skipped]]]  # a group's units: (position, records, skipped episodes)


@dataclass(frozen=True)
class Sinks:
    """Where scored units go (this process only): ``write(unit, records)`` logs them, ``skip(unit, lost)`` logs
    the episodes that could not be scored."""

    write: Callable[[Unit, list[dict]], None]
    skip: OnSkip


def score_units(cfg: ExperimentConfig, inputs: RunInputs, todo: list[Unit], sinks: Sinks, workers: int) -> None:
    """Score the units ``todo`` (planned in order of variant, layer and group) into ``sinks``.

    Each (variant, fold) reads the layer chosen for it (``inputs.layers``), else the configured one.
    """
    reuse = Reuse(cfg.algorithms.run)  # variants with equal features: scored once
    chosen = inputs.layers
    learns = functools.partial(learns_across_speakers, cfg)
    for (variant, layer), block in groupby(todo, key=lambda u: (u.variant, chosen.get((u.variant, u.fold)))):
        by_variant = list(block)
        table = variant_features(cfg, inputs.variants[variant], inputs.table_rows(by_variant, learns), layer)
        digest = features_digest(table.rows, table.x)
        groups = [list(g) for _, g in groupby(by_variant, key=lambda u: u.group)]
        emit = functools.partial(_emit, reuse, sinks, digest)
        args = (inputs.variants[variant], table, inputs.folds)
        if workers <= 1:  # here, each unit logged as the trial engine yields it: a kill loses one batch at most
            for units in groups:
                emit(units, functools.partial(score_group, cfg, units, *args))
            continue
        forked = []
        for i, units in enumerate(groups):
            if reuse.copies(units, digest):
                emit(units, _never)
            else:
                forked.append(i)
        jobs = {str(i): functools.partial(_collect, cfg, groups[i], *args)
                for i in sorted(forked, key=lambda i: slowest_first(groups[i]))}
        for i, scored in run_forked(jobs, workers):
            emit(groups[int(i)], functools.partial(_replay, groups[int(i)], scored))


def slowest_first(units: list[Unit]) -> int:
    """The order a block's groups start in, so that its slowest ones never start last while a worker idles (the
    workers take them in this order; records are the same whatever the order): methods that adapt the backbone
    from audio (minutes per group on a CPU), then those that meta-train, then the rest."""
    cls = adapter_class(units[0].group[3])
    return 0 if cls.inputs == "audio" else 1 if cls.meta_learns else 2


def _emit(reuse: Reuse, sinks: Sinks, digest: str, units: list[Unit],
          score: Callable[[OnSkip], Iterator[tuple[Unit, list[dict]]]]) -> None:
    """One group's records into ``sinks``: copies of an earlier variant's (:class:`Reuse`), or what ``score`` gives."""
    for unit, records in reuse.scored(units, digest, score, sinks.skip):
        sinks.write(unit, records)


def run_workers(cfg: ExperimentConfig) -> int:
    """The processes scoring a run's groups: ``cfg.workers`` (0: one per CPU this process may use), 1 where the
    adapters run on a GPU (a forked process cannot use CUDA once its parent has)."""
    from metalearn.util.devices import resolve_device

    if resolve_device(cfg.device).type != "cpu":
        return 1
    return usable_workers(cfg.workers or None)


def _collect(cfg: ExperimentConfig, units: list[Unit], variant, table, folds) -> Scored:  # noqa: ANN001
    """A group scored (in a worker): each unit's position in ``units`` with its records and skipped episodes."""
    lost: dict[int, list[Skipped]] = {}
    records = {id(unit): found for unit, found in
               score_group(cfg, units, variant, table, folds, lambda unit, skipped: lost.update({id(unit): skipped}))}
    return [(i, records.get(id(u), []), lost.get(id(u), [])) for i, u in enumerate(units)
            if id(u) in records or id(u) in lost]


def _replay(units: list[Unit], scored: Scored, on_skip: OnSkip) -> Iterator[tuple[Unit, list[dict]]]:
    """A worker's group as :func:`score_group` would have yielded it here: each unit's skips, then its records."""
    for i, records, lost in scored:
        if lost:
            on_skip(units[i], lost)
        if records:
            yield units[i], records


def _never(on_skip: OnSkip) -> Iterator[tuple[Unit, list[dict]]]:
    raise AssertionError("a group of copies is never scored")
