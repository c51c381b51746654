"""What is written from the studies of ``tune`` in the journal file.

- ``tuning/<method>.csv``: every trial of every study (variant, fold, state, whether it counts, values,
  validation accuracy overall and per k, how many validation speakers it is over, seconds);
- ``tuning.md`` (in the run folder, :mod:`metalearn.tune.summary`): per method, variant and fold, the trials
  counted, the hand-set and the chosen validation accuracy and the chosen values;
- ``tuning/tuned.yaml``: the overlay ``run`` reads (``tuned.file``): per fold, each variant's winners
  (``variants.<variant>.algorithms`` and ``.meta_steps``) beside the fold-level ones, which apply to a variant
  without its own entry (they are ``tune.variant``'s, else the first tuned variant's, per method).

Only the first ``tune.trials`` finished trials of a study (by trial number) count (fewer where a method
declares a smaller budget), so every method has the same budget even when several workers overshoot together.
Every counted trial is checked against its checksum first (:func:`metalearn.tune.journal.verified`).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from metalearn.run.config import ExperimentConfig
from metalearn.run.grid import Fold
from metalearn.run.tuned import DIGEST_KEY, overlay_digest
from metalearn.tune.journal import StudyKey, best, counted, load, study_keys, verified
from metalearn.tune.spaces import trials_for
from metalearn.util.errors import MetalearnError
from metalearn.util.fileio import write_atomic
from metalearn.util.provenance import git_commit
from metalearn.util.yaml_ids import parse_value


@dataclass(frozen=True)
class Outcome:
    """A study's result: its key, the variants it stands for (identical features), every trial, the counted
    ones, the hand-set trial and the winner."""

    key: StudyKey
    variants: tuple[str, ...]
    trials: list
    counted: list
    hand: Any
    chosen: Any


def outcomes(cfg: ExperimentConfig, storage: Any, journal: Path, folds: list[Fold]) -> list[Outcome]:
    """Every study of the journal in one of ``folds`` with a counted trial (earlier tune calls' included)."""
    mine, found, lost = {f.fold for f in folds}, [], []
    for key in study_keys(storage, journal):
        if key.fold not in mine:
            continue
        study = verified(load(storage, key, journal), key, journal)
        first = counted(study, trials_for(key.algorithm, cfg.tune.trials))
        if not first:
            continue
        hand = next((t for t in first if t.user_attrs.get("hand_set")), None)
        if hand is None:
            lost.append(key.name)
        variants = tuple(study.user_attrs.get("variants") or (key.variant,))
        trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
        found.append(Outcome(key, variants, trials, first, hand, best(first)))
    if lost:
        raise MetalearnError(f"{journal}: studies {lost} have no finished hand-set trial among their counted ones; "
                             f"delete the tuning folder and tune again")
    return found


def complete(found: list[Outcome], folds: list[Fold], algorithms: list[str], variants: list[str]
             ) -> dict[tuple[str, str], dict[int, Outcome]]:
    """(method, variant) -> fold -> the outcome that stands for the variant there, for every pair tuned in
    every fold; methods in ``algorithms`` order, then variants in ``variants`` order (others after, by name)."""
    by_pair: dict[tuple[str, str], dict[int, Outcome]] = {}
    for o in found:
        for v in o.variants:
            by_pair.setdefault((o.key.algorithm, v), {})[o.key.fold] = o
    done = [p for p, mine in by_pair.items() if all(f.fold in mine for f in folds)]

    def order(name: str, names: list[str]) -> tuple[int, str]:
        return (names.index(name) if name in names else len(names), name)

    return {p: by_pair[p] for p in sorted(done, key=lambda p: (order(p[0], algorithms), order(p[1], variants)))}


def write_results(cfg: ExperimentConfig, storage: Any, journal: Path, algorithms: list[str], variants: list[str],
                  folds: list[Fold]) -> dict[str, Path]:
    """Write every tuned method's CSV, tuning.md and the overlay from the journal; returns what was written."""
    from metalearn.tune.summary import tuning_md

    out = Path(cfg.out)
    found = outcomes(cfg, storage, journal, folds)
    pairs = complete(found, folds, algorithms, variants)
    written = {}
    for a in dict.fromkeys(a for a, _ in pairs):
        written[a] = out / "tuning" / f"{a}.csv"
        write_atomic(written[a], trials_csv([o for o in found if o.key.algorithm == a]))
    written["tuning.md"] = out / "tuning.md"
    write_atomic(written["tuning.md"], tuning_md(cfg, folds, pairs))
    written["overlay"] = out / "tuning" / "tuned.yaml"
    write_atomic(written["overlay"], overlay(cfg, folds, pairs))
    return written


def trials_csv(found: list[Outcome]) -> str:
    """One row per trial of a method's studies (all variants and folds)."""
    rows = []
    for o in sorted(found, key=lambda o: (o.key.fold, o.key.variant)):
        first = {t.number for t in o.counted}
        for t in o.trials:
            a = t.user_attrs
            rows.append({"variant": o.key.variant, "variants": " ".join(o.variants), "fold": o.key.fold,
                         "trial": t.number, "state": t.state.name, "counted": t.number in first,
                         "hand_set": bool(a.get("hand_set")), "accuracy": t.value, "n_speakers": a.get("n_speakers"),
                         **{f"accuracy_k{k}": v for k, v in (a.get("by_k") or {}).items()},
                         "meta_steps": a.get("meta_steps"), "values": json.dumps(a.get("values"), sort_keys=True),
                         "seconds": a.get("seconds"), "worker": a.get("worker")})
    fields = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


class SpeakerId(str):
    """A speaker id, always written quoted (YAML 1.1 readers take an unquoted ``0019`` or ``0011`` for a number)."""


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:  # the fold-level values repeat a variant's: written out, no &id
        return True


_Dumper.add_representer(SpeakerId, lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", str(v), style="'"))


def _winners(pairs: dict, fold: int, variant: str | None) -> dict[str, dict]:
    """{algorithms: method -> values, meta_steps: method -> steps} of ``variant`` in ``fold``; None: the fold-level
    entry, per method the first variant tuned (``tune.variant`` when it was set)."""
    chosen: dict[str, Any] = {}
    for (a, v), mine in pairs.items():
        if (variant is None and a not in chosen) or v == variant:
            chosen[a] = mine[fold].chosen
    return {"algorithms": {a: t.user_attrs["values"] for a, t in chosen.items()},
            "meta_steps": {a: t.user_attrs["meta_steps"] for a, t in chosen.items()
                           if t.user_attrs.get("meta_steps") is not None}}


def overlay(cfg: ExperimentConfig, folds: list[Fold], pairs: dict[tuple[str, str], dict[int, Outcome]]) -> str:
    """The YAML overlay: per fold, the speakers, the fold-level winners and each variant's winners."""
    entries = []
    for f in folds:
        entry = {"fold": f.fold, "validation": [SpeakerId(s) for s in f.validation],
                 "meta_train": [SpeakerId(s) for s in f.meta_train], **_winners(pairs, f.fold, None)}
        entry["variants"] = {v: _winners(pairs, f.fold, v) for v in dict.fromkeys(v for _, v in pairs)}
        entries.append(entry)
    header = (f"# Tuned by `python -m metalearn tune` (config {cfg.name}, {cfg.tune.trials} trials per method, "
              f"variant and fold, commit {git_commit()}).\n# Per fold: each variant's winners under variants; the "
              f"fold-level ones apply to a variant without its own.\n# Use: python -m metalearn run --config "
              f"{cfg.name} tuned.file=<this file>\n")
    body = yaml.dump({"tuned": {"folds": entries}}, Dumper=_Dumper, sort_keys=False, default_flow_style=None,
                     width=120)
    digest = overlay_digest(parse_value(body)["tuned"])  # of the values as a reader parses them back
    return f"{header}{body}# what `tune` wrote: a run refuses the overlay when a value above no longer matches it\n" \
           f"{DIGEST_KEY}: {digest}\n"
