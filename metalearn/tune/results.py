"""The studies of ``tune`` in the journal file, and what is written from them.

- ``tuning/<method>.csv``: every trial of every fold (state, whether it counts, values, validation accuracy
  overall and per k, seconds);
- ``tuning.md`` (in the run folder): per method and fold, the trials counted, the hand-set and the chosen
  validation accuracy and the chosen values; per method and k, hand-set against tuned (mean over folds);
- ``tuning/tuned.yaml``: the overlay ``run`` reads (``tuned.file``): per fold, each method's winner.

Only the first ``tune.trials`` finished trials of a study (by trial number) count, so every method has the
same budget even when several workers overshoot together.
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from metalearn.run.config import ExperimentConfig
from metalearn.run.grid import Fold
from metalearn.util import markdown
from metalearn.util.errors import MetalearnError
from metalearn.util.fileio import write_atomic
from metalearn.util.provenance import git_commit


def open_study(storage: Any, algorithm: str, fold: int) -> Any:
    """The (method, fold) study, created with the hand-set config as its first trial; stale trials failed."""
    import optuna

    study = optuna.create_study(storage=storage, study_name=f"{algorithm}/fold{fold}", direction="maximize",
                                load_if_exists=True)
    fail_stale(study, storage)
    from optuna.trial import TrialState

    # the hand-set config comes first; again when its trial failed (an error, or a killed worker) before any
    # other finished, so the first finished trial is always the hand-set one
    if not any(t.user_attrs.get("hand_set") and t.state != TrialState.FAIL for t in study.trials) \
            and not finished(study):
        study.enqueue_trial({}, user_attrs={"hand_set": True})
    return study


def fail_stale(study: Any, storage: Any) -> None:
    """Mark FAIL the running trials of workers on this host whose process is gone (killed mid-trial)."""
    from optuna.trial import TrialState

    host = socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker_host, _, pid = str(t.user_attrs.get("worker", "")).rpartition(":")
        if worker_host == host and pid.isdigit() and not _alive(int(pid)):
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def finished(study: Any) -> list:
    """The study's finished (complete) trials, by trial number."""
    from optuna.trial import TrialState

    return sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)


def counted(study: Any, trials: int) -> list:
    """The trials that count: the first ``trials`` finished ones."""
    return finished(study)[:trials]


def best(trials: list) -> Any:
    """The highest validation accuracy (ties: the earliest trial, so the hand-set config wins a tie)."""
    return max(trials, key=lambda t: (t.value, -t.number))


def tuned_methods(storage: Any, folds: list[Fold], order: list[str]) -> list[str]:
    """Every method in the journal with a finished trial in every fold (earlier tune calls included), in
    ``order`` first."""
    import optuna

    names = set(optuna.get_all_study_names(storage))
    methods = {n.rpartition("/")[0] for n in names}
    done = [m for m in methods if all(f"{m}/fold{f.fold}" in names and finished(
        optuna.load_study(study_name=f"{m}/fold{f.fold}", storage=storage)) for f in folds)]
    return sorted(done, key=lambda m: (order.index(m) if m in order else len(order), m))


def write_results(cfg: ExperimentConfig, storage: Any, order: list[str], folds: list[Fold]) -> dict[str, Path]:
    """Write every tuned method's CSV, tuning.md and the overlay from the journal; returns what was written."""
    import optuna

    out, n = Path(cfg.out), cfg.tune.trials
    algorithms = tuned_methods(storage, folds, order)
    studies = {(a, f.fold): optuna.load_study(study_name=f"{a}/fold{f.fold}", storage=storage)
               for a in algorithms for f in folds}
    written = {}
    for a in algorithms:
        written[a] = out / "tuning" / f"{a}.csv"
        write_atomic(written[a], trials_csv([(f.fold, studies[a, f.fold]) for f in folds], n))
    chosen = {key: best(counted(study, n)) for key, study in studies.items()}
    hand = {key: next((t for t in counted(study, n) if t.user_attrs.get("hand_set")), None)
            for key, study in studies.items()}
    lost = sorted(f"{a}/fold{f}" for (a, f), t in hand.items() if t is None)
    if lost:
        journal = Path(cfg.out) / "tuning" / "journal.log"
        raise MetalearnError(f"{journal}: studies {lost} have no finished hand-set trial among their first {n}; "
                             f"delete the tuning folder and tune again")
    written["tuning.md"] = out / "tuning.md"
    write_atomic(written["tuning.md"], tuning_md(cfg, algorithms, folds, chosen, hand, studies))
    written["overlay"] = out / "tuning" / "tuned.yaml"
    write_atomic(written["overlay"], overlay(cfg, algorithms, folds, chosen))
    return written


def trials_csv(studies: list[tuple[int, Any]], n: int) -> str:
    """One row per trial of the method's studies (all folds)."""
    rows = []
    for fold, study in studies:
        first = {t.number for t in counted(study, n)}
        for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
            a = t.user_attrs
            rows.append({"fold": fold, "trial": t.number, "state": t.state.name, "counted": t.number in first,
                         "hand_set": bool(a.get("hand_set")), "accuracy": t.value,
                         **{f"accuracy_k{k}": v for k, v in (a.get("by_k") or {}).items()},
                         "meta_steps": a.get("meta_steps"), "values": json.dumps(a.get("values"), sort_keys=True),
                         "seconds": a.get("seconds"), "worker": a.get("worker")})
    fields = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _values(t: Any) -> str:
    values = dict(t.user_attrs.get("values") or {})
    if t.user_attrs.get("meta_steps") is not None:
        values["meta_steps"] = t.user_attrs["meta_steps"]
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(values.items()))


def tuning_md(cfg: ExperimentConfig, algorithms: list[str], folds: list[Fold], chosen: dict, hand: dict,
              studies: dict) -> str:
    """The chosen values and their validation scores, every method with its number of counted trials."""
    n = cfg.tune.trials
    lines = [f"# Tuning: {cfg.name}", "",
             f"One Optuna study (seeded TPE, seed {cfg.tune.seed}) per method and fold; {n} trials each, the first "
             f"the hand-set config. Objective: mean accuracy over the fold's validation speakers' episodes "
             f"(pretune variant {cfg.tune.variant or 'the first'}), after learning from its meta-training speakers "
             f"only. Test speakers were never scored. Commit {git_commit()}.", ""]
    rows = [[a, f.fold, ", ".join(f.validation), len(counted(studies[a, f.fold], n)), f"{hand[a, f.fold].value:.4f}",
             f"{chosen[a, f.fold].value:.4f}", _values(chosen[a, f.fold])] for a in algorithms for f in folds]
    lines += markdown.table(["method", "fold", "validation speakers", "trials", "hand-set", "tuned", "chosen values"],
                            rows, [markdown.PLAIN] * 7)
    ks = sorted({k for t in chosen.values() for k in t.user_attrs.get("by_k", {})}, key=int)
    cell = "{0:.3f} / {1:.3f}"
    rows = []
    for a in algorithms:
        cells = []
        for k in ks:
            pair = [np.mean([d[a, f.fold].user_attrs["by_k"].get(k, np.nan) for f in folds]) for d in (hand, chosen)]
            cells.append("-" if np.isnan(pair[0]) else cell.format(*pair))
        rows.append([a, *cells])
    lines += ["", "Validation accuracy per k, mean over folds (hand-set / tuned):", "",
              *markdown.table(["method", *(f"k={k}" for k in ks)], rows, [markdown.PLAIN] * (len(ks) + 1))]
    return "\n".join(lines) + "\n"


def overlay(cfg: ExperimentConfig, algorithms: list[str], folds: list[Fold], chosen: dict) -> str:
    """The YAML overlay: per fold, each method's winning config values and meta-training steps."""
    entries = []
    for f in folds:
        steps = {a: chosen[a, f.fold].user_attrs["meta_steps"] for a in algorithms
                 if chosen[a, f.fold].user_attrs.get("meta_steps") is not None}
        entries.append({"fold": f.fold, "validation": list(f.validation), "meta_train": list(f.meta_train),
                        "algorithms": {a: chosen[a, f.fold].user_attrs["values"] for a in algorithms},
                        "meta_steps": steps})
    header = (f"# Tuned by `python -m metalearn tune` (config {cfg.name}, {cfg.tune.trials} trials per method and "
              f"fold, commit {git_commit()}).\n# Use: python -m metalearn run --config {cfg.name} "
              f"tuned.file=<this file>\n")
    return header + yaml.safe_dump({"tuned": {"folds": entries}}, sort_keys=False, default_flow_style=None)
