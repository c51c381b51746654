"""``python -m metalearn tune``: the same tuning budget for every method, spent on validation speakers only.

One Optuna study per (method, pretune variant, fold), for every variant the method runs on
(``algorithms.only.<method>.variants``; ``tune.variant`` names one variant to tune alone), maximising the
mean over the fold's validation speakers of each speaker's mean accuracy over its episodes (drawn exactly like
the test episodes and scored by the run's own code, :func:`score_group`, with the trial's values as that
fold's tuned values), at the variant's feature for that fold (the layer chosen on the fold's validation
speakers with ``features.choose_layer``), after learning from the fold's meta-training speakers only.
Variants whose features are identical in a fold share one study for the methods whose trials the run copies
between them (:class:`metalearn.run.reuse.Reuse`: every method on embeddings without a prompt prior), since
each trial would score the same.

The first trial of every study is the hand-set config; the others come from TPE, seeded per (method, variant,
fold, trial index), so a resumed study draws what an uninterrupted one would. Studies live in one Optuna
journal file (:mod:`metalearn.tune.journal`): several workers may run the same command side by side (they
share the run folder's lock, :mod:`metalearn.tune.folder`), a killed worker's study resumes, and exactly the
first ``tune.trials`` finished trials of every study count (fewer for a method that declares a smaller
budget, :func:`metalearn.tune.spaces.trials_for`). The results (:mod:`metalearn.tune.results`):
``tuning/<method>.csv``, ``tuning.md`` and the overlay ``tuning/tuned.yaml`` that ``run`` reads through
``tuned.file``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
import zlib
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np

from metalearn.features.table import FeatureTable
from metalearn.fewshot.episodes import Episode
from metalearn.pretune.variant import PretuneVariant
from metalearn.run.config import ExperimentConfig, TunedConfig
from metalearn.run.grid import Fold
from metalearn.run.layer_choice import choose_layers, speaker_mean
from metalearn.run.planning import check_grid, learns_across_speakers
from metalearn.run.reuse import Reuse, features_digest
from metalearn.run.run_folder import as_dict, to_yaml
from metalearn.run.runner import plan, prepared, speaker_folds, target_rows
from metalearn.run.scoring import score_group
from metalearn.run.stages import check_roots, variant_features
from metalearn.run.tuned import with_values
from metalearn.tune.folder import check_folder, tune_lock
from metalearn.tune.journal import JOURNAL, StudyKey, finished, open_storage, open_study, trial_checksum
from metalearn.tune.spaces import search_space, space_fields, trials_for
from metalearn.util.errors import MetalearnError
from metalearn.util.fileio import make_folder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Study:
    """One study to run: its key (named after the first variant it stands for), every variant of the fold whose
    features equal that variant's and share it (the key's variant first), and the digest of those features."""

    key: StudyKey
    variants: tuple[str, ...]
    features: str


@dataclass
class Scorer:
    """What every trial reuses: the config, the folds, the tuned variants, each (variant, fold)'s features (at
    the fold's chosen layer with ``features.choose_layer``, as the run reads them) and the episodes."""

    cfg: ExperimentConfig
    folds: list[Fold]
    variants: dict[str, PretuneVariant]
    features: dict[tuple[str, int], FeatureTable]  # (variant, fold) -> the variant's features at its layer
    episodes: dict[int, list[Episode]]

    def fold(self, number: int) -> Fold:
        return next(f for f in self.folds if f.fold == number)

    def score(self, key: StudyKey, values: dict, meta_steps: int | None) -> dict:
        """Mean accuracy over the fold's validation speakers (a speaker's episodes averaged first), per k, and
        how many speakers were scored."""
        fold, variant = self.fold(key.fold), self.variants[key.variant]
        cfg = with_values(self.cfg, fold, key.algorithm, values, meta_steps)
        algos = dataclasses.replace(cfg.algorithms, run=[key.algorithm],  # the study's variant, chosen already
                                    only={k: dataclasses.replace(v, variants=None)
                                          for k, v in cfg.algorithms.only.items() if k == key.algorithm})
        # one meta-training seed per trial: the budget is trials, the same for every method
        cfg = dataclasses.replace(cfg, algorithms=algos,
                                  meta_train=dataclasses.replace(cfg.meta_train, seeds=cfg.meta_train.seeds[:1]))
        units = [u for u in plan(cfg, {variant.name: variant}, self.folds, self.episodes, "validation")
                 if u.fold == fold.fold]
        records = []
        for _, group in groupby(units, key=lambda u: u.group):
            for _, scored in score_group(cfg, list(group), variant, self.features[key.variant, fold.fold],
                                         self.folds):
                records += scored
        if not records:
            raise MetalearnError(f"tune: no validation episode for {key.algorithm} on {key.variant} in fold "
                                 f"{fold.fold} (speakers {list(fold.validation)})")
        return {"accuracy": speaker_mean(records), "n_speakers": len({str(r["speaker"]) for r in records}),
                "by_k": {str(k): speaker_mean([r for r in records if r["k"] == k])
                         for k in sorted({r["k"] for r in records})}}


def prepare(cfg: ExperimentConfig, folder: Path) -> Scorer:
    """Manifest, folds (validation speakers required), the tuned variants' features per fold, the episodes."""
    rows = target_rows(cfg)
    if not all(f.validation for f in speaker_folds(cfg, sorted({u.speaker for u in rows}))):  # before any work
        raise MetalearnError(f"config key 'speakers.validation': {cfg.speakers.validation} gives a fold without "
                             f"validation speakers; tuning needs them (e.g. speakers.validation=1, folds >= 2)")
    inputs = prepared(cfg, rows, make_folder(folder / "episodes", "tuning folder"), train=cfg.pretune.train)
    check_grid(cfg, list(inputs.variants))
    if cfg.tune.variant and cfg.tune.variant not in inputs.variants:
        raise MetalearnError(f"config key 'tune.variant': {cfg.tune.variant!r} is not among the run's pretune "
                             f"variants ({', '.join(inputs.variants)}; '' tunes every one)")
    names = [cfg.tune.variant] if cfg.tune.variant else list(inputs.variants)
    variants, folds = {n: inputs.variants[n] for n in names}, inputs.folds
    layers = choose_layers(cfg, variants, inputs.rows, folds, inputs.episodes, folder)  # {} unless chosen
    features = {(n, f.fold): variant_features(cfg, v, inputs.rows, layers.get((n, f.fold)))
                for n, v in variants.items() for f in folds}
    return Scorer(cfg, folds, variants, features, inputs.episodes)


def plan_studies(scorer: Scorer, algorithms: list[str]) -> list[Study]:
    """Every study of ``algorithms``: per fold, one per variant the method runs on (as the run plans it), variants
    with identical features sharing one where the run copies the method's trials between them."""
    cfg = scorer.cfg  # the tuned methods (in algorithms.run or not), on the tuned variants of their subsets
    only = {a: dataclasses.replace(p, variants=[v for v in p.variants if v in scorer.variants])
            for a, p in cfg.algorithms.only.items() if p.variants is not None}
    algos = dataclasses.replace(cfg.algorithms, run=list(algorithms), only={**cfg.algorithms.only, **only})
    cfg = dataclasses.replace(cfg, algorithms=algos)
    grid = plan(cfg, scorer.variants, scorer.folds, scorer.episodes, "validation")
    runs_on = {(u.algorithm, u.variant, u.fold) for u in grid}
    reusable = Reuse(algorithms).reusable
    digests = {key: features_digest(t.rows, t.x) for key, t in scorer.features.items()}
    studies = []
    for algorithm in algorithms:
        for fold in scorer.folds:
            groups: dict[tuple, list[str]] = {}
            for name in scorer.variants:
                if (algorithm, name, fold.fold) in runs_on:
                    digest = digests[name, fold.fold]
                    groups.setdefault((digest,) if algorithm in reusable else (digest, name), []).append(name)
            if not groups:
                raise MetalearnError(f"tune: {algorithm} runs on none of the variants tuned "
                                     f"({', '.join(scorer.variants)}) in fold {fold.fold}; see "
                                     f"algorithms.only.{algorithm}.variants and tune.variant")
            studies += [Study(StudyKey(algorithm, names[0], fold.fold), tuple(names), group[0])
                        for group, names in groups.items()]
    return studies


def tuned_algorithms(cfg: ExperimentConfig) -> list[str]:
    """``tune.algorithms``, else every algorithm of ``algorithms.run`` with a search space."""
    chosen = cfg.tune.algorithms if cfg.tune.algorithms is not None else [
        a for a in cfg.algorithms.run if search_space(a) is not None]
    spaceless = [a for a in chosen if search_space(a) is None]
    if spaceless or not chosen:
        raise MetalearnError(f"config key 'tune.algorithms': {spaceless or chosen} have no search space (tunable: "
                             f"those of algorithms.run with one, e.g. finetune, maml, transfer)")
    return list(chosen)


def trial_seed(seed: int, key: StudyKey, index: int) -> int:
    """The TPE sampler's seed for the ``index``-th finished trial of study ``key``."""
    parts = [seed, zlib.crc32(key.algorithm.encode()), zlib.crc32(key.variant.encode()), key.fold, index]
    return int(np.random.SeedSequence(parts).generate_state(1)[0])


def run_trial(scorer: Scorer, study: Any, key: StudyKey, learns: bool) -> None:
    """Ask the study for a trial (the hand-set config first), score it on the validation speakers, tell it (with
    a checksum of what it reports)."""
    from optuna.trial import TrialState

    cfg = scorer.cfg
    trial = study.ask()
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    hand_set = bool(trial.user_attrs.get("hand_set"))
    space = search_space(key.algorithm)
    section = as_dict(getattr(cfg.algorithms, key.algorithm))
    values = {k: section[k] for k in space_fields(space)} if hand_set else space(trial)
    steps = None
    if learns:
        steps = cfg.meta_train.steps if hand_set else trial.suggest_categorical("meta_steps", cfg.tune.meta_steps)
    start = time.perf_counter()
    try:
        result = scorer.score(key, values, steps)
    except BaseException:
        study.tell(trial, state=TrialState.FAIL)
        raise
    attrs = {"hand_set": hand_set, "values": values, "meta_steps": steps, "by_k": result["by_k"],
             "n_speakers": result["n_speakers"], "seconds": time.perf_counter() - start}
    attrs["checksum"] = trial_checksum(result["accuracy"], attrs)
    for name, value in attrs.items():
        trial.set_user_attr(name, value)
    study.tell(trial, result["accuracy"])
    log.info("%s trial %d%s: validation accuracy %.4f over %d speakers", key.name, trial.number,
             " (hand-set)" if hand_set else "", result["accuracy"], result["n_speakers"])


def tune(cfg: ExperimentConfig) -> dict[str, Path]:
    """Run (or join, or resume) every study of the config until each has its trials finished; write the results.
    Holds the run folder (shared with other tune workers, refused while a run holds it)."""
    check_roots(cfg)
    with tune_lock(cfg.out):
        return _tune_locked(dataclasses.replace(cfg, tuned=TunedConfig()))  # tuning starts from hand-set values


def _tune_locked(cfg: ExperimentConfig) -> dict[str, Path]:
    import optuna
    from filelock import FileLock

    from metalearn.tune.results import write_results

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folder = make_folder(Path(cfg.out) / "tuning", "tuning folder")
    algorithms = tuned_algorithms(cfg)
    check_folder(to_yaml(cfg), folder)
    scorer = prepare(cfg, folder)
    storage, journal = open_storage(folder), folder / JOURNAL
    for study_plan in plan_studies(scorer, algorithms):
        key = study_plan.key
        learns = learns_across_speakers(scorer.cfg, key.algorithm, 0)  # hand-set: no fold is tuned
        with FileLock(folder / ".create.lock"):
            study = open_study(storage, key, list(study_plan.variants), study_plan.features, journal)
        while len(finished(study)) < trials_for(key.algorithm, cfg.tune.trials):
            study.sampler = optuna.samplers.TPESampler(seed=trial_seed(cfg.tune.seed, key, len(finished(study))))
            run_trial(scorer, study, key, learns)
    return write_results(cfg, storage, journal, [*cfg.algorithms.run, *algorithms], list(scorer.variants),
                         scorer.folds)


def main(cfg: ExperimentConfig) -> int:
    """``python -m metalearn tune``: run the studies, print where the results went."""
    written = tune(cfg)
    print((Path(cfg.out) / "tuning.md").read_text(encoding="utf-8"))
    for name, path in written.items():
        print(f"  {name}: {path}")
    print(f"use the winners: python -m metalearn run --config ... tuned.file={written['overlay']}")
    return 0
