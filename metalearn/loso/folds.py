"""GEmo-CLAP's IEMOCAP protocol, its pure pieces: sessions, leave-one-session-out folds, a frozen-encoder
fold, and the paper's table.

Each IEMOCAP session (two actors) is held out once: its utterances are the test set, a seeded share of the
other sessions' utterances is the dev set (it picks the training step or epoch, by zero-shot UA) and the
rest trains. Prediction is zero-shot: the class prompt nearest to the audio embedding. WA = accuracy, UA =
mean per-class recall, as in the paper. The experiment that runs these folds from a config, resumably,
is :mod:`metalearn.loso.runner`.

IEMOCAP's scripted dialogs are the same three scripts in every session, so a held-out session's scripted lines
were said in the training sessions too (a lexical leak); :func:`shared_sentences` counts such utterances, and
the loader's ``type`` option (``improvised``) leaves the scripted dialogs out.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from metalearn.clap.config import ClapConfig, ClapHeadsConfig
from metalearn.clap.heads import HeadsData, dev_split, fit_heads
from metalearn.data.corpora.iemocap import OPTIONS, TYPES
from metalearn.data.manifest import Utterance
from metalearn.data.sentences import sentence_key
from metalearn.util import markdown
from metalearn.util.errors import MetalearnError
from metalearn.util.intervals import t_interval

NAMES = {"clip": "CLIP targets", "emo": "Emo-CLAP", "ml": "ML-GEmo-CLAP", "sl": "SL-GEmo-CLAP"}


def session(u: Utterance) -> str:
    """IEMOCAP's session of an utterance: ``Ses01`` from speaker ``Ses01F``."""
    if not u.speaker.startswith("Ses") or len(u.speaker) < 5:
        raise MetalearnError(f"{u.path}: speaker {u.speaker!r} does not name an IEMOCAP session (SesNN...)")
    return u.speaker[:5]


def sessions_of(rows: Sequence[Utterance]) -> list[str]:
    """The sorted sessions of ``rows``; leave-one-session-out needs at least two."""
    sessions = sorted({session(u) for u in rows})
    if len(sessions) < 2:
        raise MetalearnError(f"leave-one-session-out needs >= 2 sessions, found {sessions}")
    return sessions


def shared_sentences(rows: Sequence[Utterance]) -> int:
    """How many of ``rows`` say a sentence (:func:`sentence_key`) that a row of another session says too: the
    test utterances whose words leave-one-session-out trains on."""
    said_in: dict[str, set[str]] = defaultdict(set)
    for u in rows:
        said_in[sentence_key(u)].add(session(u))
    return sum(len(said_in[sentence_key(u)]) > 1 for u in rows)


def check_options(options: dict[str, str]) -> None:
    """The IEMOCAP loader's options of a config: ``type`` selects the dialogs (all, improvised, scripted)."""
    for key in sorted(set(options) - set(OPTIONS)):
        raise MetalearnError(f"config key 'data.target.options.{key}': not an iemocap option (valid: "
                             f"{', '.join(OPTIONS)})")
    dialogs = str(options.get("type", OPTIONS["type"]))
    if dialogs not in TYPES:
        raise MetalearnError(f"config key 'data.target.options.type': {dialogs!r}, expected one of "
                             f"{', '.join(TYPES)} (which IEMOCAP dialogs)")


def dialogs_text(options: dict[str, str], rows: Sequence[Utterance]) -> str:
    """Which dialogs ``rows`` are (the loader's ``type``), and how many say a sentence another session says."""
    dialogs = str(options.get("type", OPTIONS["type"]))
    what = {"all": "the improvised and scripted dialogs", "improvised": "the improvised dialogs only",
            "scripted": "the scripted dialogs only"}[dialogs]
    shared = shared_sentences(rows)
    text = f"{what} (data.target.options.type={dialogs}); {shared} of them say a sentence another session says too"
    if shared and dialogs != "improvised":
        text += " (the scripts recur in every session: type=improvised gives a figure without that overlap)"
    return text


@dataclass(frozen=True)
class SessionSplit:
    """One held-out session: index arrays into the rows the fold was made from."""

    held_out: str
    train: np.ndarray   # [N_train] the other sessions, minus dev
    dev: np.ndarray     # [N_dev] a seeded share of the other sessions
    test: np.ndarray    # [N_test] every row of the held-out session


def loso_fold(rows: Sequence[Utterance], held_out: str, dev_fraction: float, seed: int) -> SessionSplit:
    """The fold holding out ``held_out``: test = its rows; dev = a seeded ``dev_fraction`` of the rest."""
    test = np.array([i for i, u in enumerate(rows) if session(u) == held_out], dtype=np.int64)
    rest = np.array([i for i, u in enumerate(rows) if session(u) != held_out], dtype=np.int64)
    if not len(test) or len(rest) < 2:
        raise MetalearnError(f"session {held_out}: {len(test)} test and {len(rest)} training utterances, "
                             f"expected >= 1 and >= 2")
    dev_at, train_at = dev_split(len(rest), dev_fraction, seed)
    fold = SessionSplit(held_out, rest[train_at], rest[dev_at], test)
    check_fold(rows, fold)
    return fold


def check_fold(rows: Sequence[Utterance], fold: SessionSplit) -> None:
    """Refuse a fold whose train or dev set holds an utterance of the held-out session, or overlaps test."""
    leaked = sorted({rows[i].utterance_id for i in (*fold.train, *fold.dev) if session(rows[i]) == fold.held_out})
    if leaked or set(fold.train) & set(fold.dev) or set(fold.test) & set((*fold.train, *fold.dev)):
        raise MetalearnError(f"fold {fold.held_out}: train/dev/test overlap or hold the test session "
                             f"({leaked[:3]}); the held-out session must be unseen")


def train_sessions(rows: Sequence[Utterance], fold: SessionSplit) -> str:
    """The sessions a fold trained and selected on, ``+``-joined (``Ses02+Ses03``)."""
    return "+".join(sorted({session(rows[i]) for i in (*fold.train, *fold.dev)}))


def heads_fold(x: Tensor, rows: Sequence[Utterance], fold: SessionSplit, classes: Sequence[str], model_cfg: ClapConfig,
               heads_cfg: ClapHeadsConfig) -> dict:
    """Train fresh CLAP heads on a frozen encoder's pooled features, score the held-out session zero-shot.

    ``x`` [N, D] is aligned with ``rows`` (every row's emotion in ``classes``). The heads are initialised
    from ``heads_cfg.seed``; the dev set picks the step. Returns wa, ua, n_test, n_train, n_dev, dev_wa,
    dev_ua, best_step. Runs on one CPU thread (:func:`fit_heads`).
    """
    classes = list(classes)
    y = torch.tensor([classes.index(u.emotion) for u in rows], dtype=torch.long)
    train = fold.train
    data = HeadsData(x[train], [rows[i].emotion for i in train], [rows[i].gender for i in train],
                     x[fold.dev], y[fold.dev], x[fold.test], y[fold.test])
    _, step, dev, test = fit_heads(data, classes, model_cfg, heads_cfg)
    return {**test, "n_test": len(fold.test), "n_train": len(train), "n_dev": len(fold.dev),
            "dev_wa": dev["wa"], "dev_ua": dev["ua"], "best_step": step}


# ---------------------------------------------------------------------------------------------- the table

def loso_summary(records: Sequence[dict], order: Sequence[str] | None = None) -> list[dict]:
    """One row per CLAP loss: per-session WA/UA values (one per seed) and the means over folds.

    A fold is a held-out session; with several seeds its value is their mean. ``wa_mean``/``ua_mean`` are
    means over folds, ``wa_ci95``/``ua_ci95`` their 95% Student-t half-widths (NaN for one fold), ``folds``
    the count. Values are fractions. ``order`` fixes the losses' order (default: first seen).
    """
    sessions = sorted({r["session"] for r in records})
    losses = [v for v in (order or dict.fromkeys(r["loss"] for r in records))
                if any(r["loss"] == v for r in records)]
    out = []
    for loss in losses:
        mine = [r for r in records if r["loss"] == loss]
        cells = {s: {m: [float(r[m]) for r in mine if r["session"] == s] for m in ("wa", "ua")} for s in sessions}
        row = {"loss": loss, "method": NAMES.get(loss, loss), "cells": cells,
               "seeds": len({r["seed"] for r in mine})}
        for m in ("wa", "ua"):
            mean, half, n = t_interval([float(np.mean(c[m])) for c in cells.values() if c[m]])
            row.update({f"{m}_mean": mean, f"{m}_ci95": half, "folds": n})
        out.append(row)
    return out


def _pct(value: float) -> str:
    return "–" if not math.isfinite(value) else f"{100 * value:.1f}"


def _cell(values: Sequence[float]) -> str:
    """A session's cell: its value (%), or over several seeds their mean ± 95% CI (n)."""
    if not values:
        return "–"
    if len(values) == 1:
        return _pct(values[0])
    mean, half, n = t_interval(values)
    return f"{_pct(mean)} ± {_pct(half)} (n={n})"


def loso_table(records: Sequence[dict], order: Sequence[str] | None = None) -> str:
    """The paper's layout in Markdown: one row per method, WA | UA (%) per held-out session, then the mean
    WA and UA over folds, each ± its 95% CI, and the number of folds. A missing fold shows as ``–``."""
    sessions = sorted({r["session"] for r in records})
    header = ["method", *(f"{s} {m}" for s in sessions for m in ("WA", "UA")), "mean WA", "mean UA", "folds"]
    rows = [[row["method"], *(_cell(row["cells"][s][m]) for s in sessions for m in ("wa", "ua")),
             *(f"{_pct(row[f'{m}_mean'])} ± {_pct(row[f'{m}_ci95'])}" for m in ("wa", "ua")), row["folds"]]
            for row in loso_summary(records, order)]
    return "\n".join(markdown.table(header, rows, [markdown.LEFT] + [markdown.RIGHT] * (len(header) - 1)))


def loso_table_rows(records: Sequence[dict], order: Sequence[str] | None = None) -> list[dict]:
    """The table as flat rows (CSV, W&B), in %: method, loss, ``{session}_wa``/``_ua`` (mean over seeds),
    wa_mean, wa_ci95, ua_mean, ua_ci95, folds, seeds."""
    rows = []
    for row in loso_summary(records, order):
        flat = {"method": row["method"], "loss": row["loss"]}
        for s, cell in row["cells"].items():
            for m in ("wa", "ua"):
                flat[f"{s}_{m}"] = _round_pct(float(np.mean(cell[m])) if cell[m] else math.nan)
        for key in ("wa_mean", "wa_ci95", "ua_mean", "ua_ci95"):
            flat[key] = _round_pct(row[key])
        rows.append({**flat, "folds": row["folds"], "seeds": row["seeds"]})
    return rows


def _round_pct(value: float) -> float:
    return round(100 * value, 2) if math.isfinite(value) else math.nan
