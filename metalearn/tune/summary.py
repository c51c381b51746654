"""``tuning.md``: per method, variant and fold, what was chosen on how many validation speakers, and how it did.

Every score is the mean over the fold's validation speakers of each speaker's mean accuracy over its episodes
(all ks), after learning from the fold's meta-training speakers only; the table says over how many speakers.
A variant whose features equal another's in a fold shares that variant's study (the same trials would score
the same); its rows say so.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from metalearn.run.config import ExperimentConfig
from metalearn.run.grid import Fold
from metalearn.tune.spaces import declared_trials, trials_for
from metalearn.util import markdown
from metalearn.util.provenance import git_commit


def _values(t: Any) -> str:
    values = dict(t.user_attrs.get("values") or {})
    if t.user_attrs.get("meta_steps") is not None:
        values["meta_steps"] = t.user_attrs["meta_steps"]
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(values.items()))


def _budget(cfg: ExperimentConfig, algorithms: list[str]) -> str:
    smaller = [f"{a} {trials_for(a, cfg.tune.trials)}" for a in algorithms
               if declared_trials(a) is not None and trials_for(a, cfg.tune.trials) < cfg.tune.trials]
    every = f"{cfg.tune.trials} trials each"
    return f"{every}, except the methods that declare a smaller budget ({', '.join(smaller)})" if smaller else every


def _speakers(t: Any, fold: Fold) -> str:
    n = t.user_attrs.get("n_speakers")
    return f"{'?' if n is None else n} of {len(fold.validation)} ({', '.join(fold.validation)})"


def tuning_md(cfg: ExperimentConfig, folds: list[Fold], pairs: dict) -> str:
    """The chosen values and their validation scores per method, variant and fold (``pairs``: (method, variant)
    -> fold -> outcome, :func:`metalearn.tune.results.complete`), then hand-set against tuned per k."""
    algorithms = list(dict.fromkeys(a for a, _ in pairs))
    counts = sorted({len(f.validation) for f in folds})
    lines = [f"# Tuning: {cfg.name}", "",
             f"One Optuna study (seeded TPE, seed {cfg.tune.seed}) per method, pretune variant and fold; "
             f"{_budget(cfg, algorithms)}, the first the hand-set config. Objective: the mean over the fold's "
             f"validation speakers ({' or '.join(map(str, counts))} per fold) of each speaker's mean accuracy over "
             f"its episodes, at the variant's feature for the fold, after learning from the fold's meta-training "
             f"speakers only. Test speakers were never scored. A variant whose features equal another's in a fold "
             f"shares that variant's study (\"shares X's\"). Commit {git_commit()}.", ""]
    rows = []
    for (a, v), mine in pairs.items():
        for f in folds:
            o = mine[f.fold]
            study = "own" if o.key.variant == v else f"shares {o.key.variant}'s (identical features)"
            rows.append([a, v, f.fold, study, _speakers(o.chosen, f), len(o.counted), f"{o.hand.value:.4f}",
                         f"{o.chosen.value:.4f}", _values(o.chosen)])
    lines += markdown.table(["method", "variant", "fold", "study", "validation speakers scored", "trials",
                             "hand-set", "tuned", "chosen values"], rows, [markdown.PLAIN] * 9)
    ks = sorted({k for mine in pairs.values() for o in mine.values() for k in o.chosen.user_attrs.get("by_k", {})},
                key=int)
    rows = []
    for (a, v), mine in pairs.items():
        cells = []
        for k in ks:
            pair = [np.mean([getattr(mine[f.fold], which).user_attrs["by_k"].get(k, np.nan) for f in folds])
                    for which in ("hand", "chosen")]
            cells.append("-" if np.isnan(pair[0]) else f"{pair[0]:.3f} / {pair[1]:.3f}")
        rows.append([a, v, *cells])
    lines += ["", "Validation accuracy per k, mean over folds (hand-set / tuned):", "",
              *markdown.table(["method", "variant", *(f"k={k}" for k in ks)], rows,
                              [markdown.PLAIN] * (len(ks) + 2))]
    return "\n".join(lines) + "\n"
