"""``python -m metalearn tune``: the same tuning budget for every method, spent on validation speakers only.

One Optuna study per (method, fold), maximising the mean accuracy over the fold's validation speakers'
episodes, drawn exactly like the test episodes and scored by the run's own code (:func:`score_group`, with the
trial's values as that fold's tuned values), after learning from the fold's meta-training speakers only. The
first trial of every study is the hand-set config; the others come from TPE, seeded per (method, fold,
trial index), so a resumed study draws what an uninterrupted one would. Studies live in one Optuna journal
file (``<out>/tuning/journal.log``, no server): several workers may run the same command side by side, a
killed worker's study resumes, and exactly the first ``tune.trials`` finished trials of every study count.
The results (:mod:`metalearn.tune.results`): ``tuning/<method>.csv``, ``tuning.md`` and the
overlay ``tuning/tuned.yaml`` that ``run`` reads through ``tuned.file``.
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
from metalearn.run.planning import learns_across_speakers
from metalearn.run.run_folder import as_dict, config_difference, to_yaml
from metalearn.run.runner import plan, prepared, speaker_folds, target_rows
from metalearn.run.scoring import score_group
from metalearn.run.stages import check_roots, variant_features
from metalearn.run.tuned import with_values
from metalearn.tune.spaces import search_space, space_fields
from metalearn.util.errors import MetalearnError
from metalearn.util.fileio import make_folder, write_atomic

log = logging.getLogger(__name__)
FREE_KEYS = ("tune.trials", "tune.algorithms", "tuned", "tracking", "name", "out")  # may change between workers


@dataclass
class Scorer:
    """What every trial reuses: the config, the folds, the tuned-on variant's features per fold (at the fold's
    chosen layer with ``features.choose_layer``, as the run reads them) and the episodes."""

    cfg: ExperimentConfig
    folds: list[Fold]
    variant: PretuneVariant
    features: dict[int, FeatureTable]  # fold -> the variant's features at the fold's layer
    episodes: dict[int, list[Episode]]

    @property
    def dim(self) -> int:
        return next(iter(self.features.values())).dim

    def score(self, algorithm: str, fold: Fold, values: dict, meta_steps: int | None) -> dict:
        """Mean accuracy over the fold's validation speakers (a speaker's episodes averaged first), and per k."""
        cfg = with_values(self.cfg, fold, algorithm, values, meta_steps)
        algos = dataclasses.replace(cfg.algorithms, run=[algorithm],
                                    only={k: dataclasses.replace(v, variants=None)  # tuned on one variant
                                          for k, v in cfg.algorithms.only.items() if k == algorithm})
        # one meta-training seed per trial: the budget is trials, the same for every method
        cfg = dataclasses.replace(cfg, algorithms=algos,
                                  meta_train=dataclasses.replace(cfg.meta_train, seeds=cfg.meta_train.seeds[:1]))
        units = [u for u in plan(cfg, {self.variant.name: self.variant}, self.folds, self.episodes, "validation")
                 if u.fold == fold.fold]
        records = []
        for _, group in groupby(units, key=lambda u: u.group):
            for _, scored in score_group(cfg, list(group), self.variant, self.features[fold.fold], self.folds):
                records += scored
        if not records:
            raise MetalearnError(f"tune: no validation episode for {algorithm} in fold {fold.fold} (speakers "
                                 f"{list(fold.validation)})")
        return {"accuracy": speaker_mean(records),
                "by_k": {str(k): speaker_mean([r for r in records if r["k"] == k])
                         for k in sorted({r["k"] for r in records})}}


def prepare(cfg: ExperimentConfig, folder: Path) -> Scorer:
    """Manifest, folds (validation speakers required), the tuned-on variant's features, the episodes."""
    rows = target_rows(cfg)
    if not all(f.validation for f in speaker_folds(cfg, sorted({u.speaker for u in rows}))):  # before any work
        raise MetalearnError(f"config key 'speakers.validation': {cfg.speakers.validation} gives a fold without "
                             f"validation speakers; tuning needs them (e.g. speakers.validation=1, folds >= 2)")
    inputs = prepared(cfg, rows, make_folder(folder / "episodes", "tuning folder"), train=cfg.pretune.train)
    name = cfg.tune.variant or next(iter(inputs.variants))
    if name not in inputs.variants:
        raise MetalearnError(f"config key 'tune.variant': {name!r} is not among the run's pretune variants "
                             f"({', '.join(inputs.variants)})")
    variant, folds = inputs.variants[name], inputs.folds
    layers = choose_layers(cfg, {name: variant}, inputs.rows, folds, inputs.episodes, folder)  # {} unless chosen
    features = {f.fold: variant_features(cfg, variant, inputs.rows, layers.get((name, f.fold))) for f in folds}
    return Scorer(cfg, folds, variant, features, inputs.episodes)


def tuned_algorithms(cfg: ExperimentConfig) -> list[str]:
    """``tune.algorithms``, else every algorithm of ``algorithms.run`` with a search space."""
    chosen = cfg.tune.algorithms if cfg.tune.algorithms is not None else [
        a for a in cfg.algorithms.run if search_space(a) is not None]
    spaceless = [a for a in chosen if search_space(a) is None]
    if spaceless or not chosen:
        raise MetalearnError(f"config key 'tune.algorithms': {spaceless or chosen} have no search space (tunable: "
                             f"those of algorithms.run with one, e.g. finetune, maml, transfer)")
    return list(chosen)


def check_folder(cfg: ExperimentConfig, folder: Path) -> None:
    """Refuse a tuning folder whose studies came from another config (``FREE_KEYS`` aside); save this one."""
    text = to_yaml(cfg)
    saved = folder / "config.yaml"
    if (folder / "journal.log").is_file() and saved.is_file():
        difference = config_difference(_without_free(saved.read_text(encoding="utf-8")), _without_free(text))
        if difference:
            raise MetalearnError(f"{folder} holds studies of another config ({difference}); use another out=... "
                                 f"or delete {folder}")
    write_atomic(saved, text)


def _without_free(text: str) -> str:
    import yaml

    data = yaml.safe_load(text) or {}
    for key in FREE_KEYS:
        head, _, tail = key.partition(".")
        if tail and isinstance(data.get(head), dict):
            data[head].pop(tail, None)
        elif not tail:
            data.pop(key, None)
    return yaml.safe_dump(data)


def trial_seed(seed: int, algorithm: str, fold: int, index: int) -> int:
    """The TPE sampler's seed for the ``index``-th finished trial of a study."""
    return int(np.random.SeedSequence([seed, zlib.crc32(algorithm.encode()), fold, index]).generate_state(1)[0])


def run_trial(scorer: Scorer, study: Any, algorithm: str, fold: Fold, learns: bool) -> None:
    """Ask the study for a trial (the hand-set config first), score it on the validation speakers, tell it."""
    from optuna.trial import TrialState

    cfg = scorer.cfg
    trial = study.ask()
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    hand_set = bool(trial.user_attrs.get("hand_set"))
    space = search_space(algorithm)
    section = as_dict(getattr(cfg.algorithms, algorithm))
    values = {k: section[k] for k in space_fields(space)} if hand_set else space(trial)
    steps = None
    if learns:
        steps = cfg.meta_train.steps if hand_set else trial.suggest_categorical("meta_steps", cfg.tune.meta_steps)
    start = time.perf_counter()
    try:
        result = scorer.score(algorithm, fold, values, steps)
    except BaseException:
        study.tell(trial, state=TrialState.FAIL)
        raise
    for key, value in (("values", values), ("meta_steps", steps), ("by_k", result["by_k"]),
                       ("seconds", time.perf_counter() - start)):
        trial.set_user_attr(key, value)
    study.tell(trial, result["accuracy"])
    log.info("%s fold %d trial %d%s: validation accuracy %.4f", algorithm, fold.fold, trial.number,
             " (hand-set)" if hand_set else "", result["accuracy"])


def tune(cfg: ExperimentConfig) -> dict[str, Path]:
    """Run (or join, or resume) every study of the config until each has ``tune.trials`` finished trials."""
    import optuna
    from filelock import FileLock

    from metalearn.tune.results import finished, open_study, write_results

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = dataclasses.replace(cfg, tuned=TunedConfig())  # tuning always starts from the hand-set values
    check_roots(cfg)
    folder = make_folder(Path(cfg.out) / "tuning", "tuning folder")
    algorithms = tuned_algorithms(cfg)
    check_folder(cfg, folder)
    scorer = prepare(cfg, folder)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(folder / "journal.log")))
    for algorithm in algorithms:
        learns = learns_across_speakers(scorer.cfg, algorithm, 0)  # hand-set: no fold is tuned
        for fold in scorer.folds:
            with FileLock(folder / ".create.lock"):
                study = open_study(storage, algorithm, fold.fold)
            while len(finished(study)) < cfg.tune.trials:
                study.sampler = optuna.samplers.TPESampler(
                    seed=trial_seed(cfg.tune.seed, algorithm, fold.fold, len(finished(study))))
                run_trial(scorer, study, algorithm, fold, learns)
    return write_results(cfg, storage, [*cfg.algorithms.run, *algorithms], scorer.folds)


def main(cfg: ExperimentConfig) -> int:
    """``python -m metalearn tune``: run the studies, print where the results went."""
    written = tune(cfg)
    print((Path(cfg.out) / "tuning.md").read_text(encoding="utf-8"))
    for name, path in written.items():
        print(f"  {name}: {path}")
    print(f"use the winners: python -m metalearn run --config ... tuned.file={written['overlay']}")
    return 0
