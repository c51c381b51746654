"""The studies of ``tune`` in their Optuna journal file: names, opening, and the damage a journal can carry.

One study per (method, pretune variant, fold), named ``<method>/<variant>/fold<f>`` (:class:`StudyKey`).
Variants whose features are identical in a fold share one study, named after the first of them; the study
records which variants it stands for and a digest of the features it was scored on (its user attributes
``variants`` and ``features``), so a resumed study on other features is refused.

Damage is found, never used: a journal that Optuna cannot replay (a damaged line, a cut in the middle) is one
line naming the file and how to start over; every finished trial carries a SHA-256 of what it reports (its
value, values, meta steps and scores per k: :func:`trial_checksum`), and a trial whose content no longer
matches (an edited objective) is refused with the study and trial named (:func:`verified`).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metalearn.util.errors import MetalearnError

JOURNAL = "journal.log"
CHECKED = ("hand_set", "values", "meta_steps", "by_k", "n_speakers")  # user attributes the checksum covers
_REPLAY_ERRORS = (ValueError, KeyError, TypeError, IndexError, AttributeError, UnicodeDecodeError)


@dataclass(frozen=True, order=True)
class StudyKey:
    """One study: a method tuned on one pretune variant's features in one fold."""

    algorithm: str
    variant: str
    fold: int

    @property
    def name(self) -> str:
        return f"{self.algorithm}/{self.variant}/fold{self.fold}"

    @staticmethod
    def parse(name: str) -> StudyKey | None:
        """The key of a study name, or None for a name of another form (an earlier per-fold journal's)."""
        head, _, tail = name.rpartition("/fold")
        algorithm, _, variant = head.partition("/")
        if not (algorithm and variant and tail.isdigit()):
            return None
        return StudyKey(algorithm, variant, int(tail))


def damaged(journal: Path, error: BaseException) -> MetalearnError:
    """The one-line refusal of a journal Optuna cannot read."""
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return MetalearnError(f"{journal}: a damaged Optuna journal ({type(error).__name__}: {first}); its studies "
                          f"cannot be resumed: delete {journal.parent} (or use another out=...) and tune again")


def open_storage(folder: Path) -> Any:
    """The journal storage of tuning folder ``folder`` (created when missing), replayed once to find damage."""
    import optuna

    journal = folder / JOURNAL
    try:
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
        optuna.get_all_study_names(storage)
    except _REPLAY_ERRORS as e:
        raise damaged(journal, e) from None
    return storage


def study_keys(storage: Any, journal: Path) -> list[StudyKey]:
    """The keys of every study in the journal (names of another form ignored), sorted."""
    import optuna

    try:
        names = optuna.get_all_study_names(storage)
    except _REPLAY_ERRORS as e:
        raise damaged(journal, e) from None
    return sorted(k for k in map(StudyKey.parse, names) if k is not None)


def load(storage: Any, key: StudyKey, journal: Path) -> Any:
    """The study of ``key`` in the journal (a damaged journal is one line)."""
    import optuna

    try:
        return optuna.load_study(study_name=key.name, storage=storage)
    except _REPLAY_ERRORS as e:
        raise damaged(journal, e) from None


def open_study(storage: Any, key: StudyKey, variants: list[str], features: str, journal: Path) -> Any:
    """The study of ``key`` for ``variants`` (the variants sharing its ``features``, a digest), created with the
    hand-set config as its first trial; stale trials failed; a study made for other variants or features, or
    holding a trial whose checksum fails, is refused."""
    import optuna
    from optuna.trial import TrialState

    try:
        study = optuna.create_study(storage=storage, study_name=key.name, direction="maximize", load_if_exists=True)
    except _REPLAY_ERRORS as e:
        raise damaged(journal, e) from None
    made = {"variants": study.user_attrs.get("variants"), "features": study.user_attrs.get("features")}
    if made["variants"] is None:
        study.set_user_attr("variants", list(variants))
        study.set_user_attr("features", features)
    elif made != {"variants": list(variants), "features": features}:
        what = "features" if made["variants"] == list(variants) else f"variants {made['variants']}"
        raise MetalearnError(f"{journal}: study {key.name} was tuned on other {what} than this config gives "
                             f"({', '.join(variants)}); delete {journal.parent} (or use another out=...) and tune "
                             f"again")
    verified(study, key, journal)
    fail_stale(study, storage)
    # the hand-set config comes first; again when its trial failed (an error, or a killed worker) before any
    # other finished, so the first finished trial is always the hand-set one
    if not any(t.user_attrs.get("hand_set") and t.state != TrialState.FAIL for t in study.trials) \
            and not finished(study):
        study.enqueue_trial({}, user_attrs={"hand_set": True})
    return study


def trial_checksum(value: float, attrs: dict) -> str:
    """SHA-256 of a finished trial's objective ``value`` and the user attributes it reports (:data:`CHECKED`)."""
    content = {"value": value, **{k: attrs.get(k) for k in CHECKED}}
    return hashlib.sha256(json.dumps(content, sort_keys=True, allow_nan=True).encode()).hexdigest()


def verified(study: Any, key: StudyKey, journal: Path) -> Any:
    """``study``, once every finished trial's content matches its checksum (else one line naming the trial)."""
    for t in finished(study):
        if t.user_attrs.get("checksum") != trial_checksum(t.value, t.user_attrs):
            raise MetalearnError(f"{journal}: study {key.name} trial {t.number} (validation accuracy {t.value}) "
                                 f"does not match its checksum: the journal was edited or damaged; delete "
                                 f"{journal.parent} (or use another out=...) and tune again")
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
