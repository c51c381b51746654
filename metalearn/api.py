"""The Python API for notebooks and scripts: every name here is re-exported by ``import metalearn``.

A typical session::

    import metalearn
    cfg = metalearn.load_config("demo", {"episodes.ks": [1, 5], "tracking.wandb": False})
    result = metalearn.run_experiment(cfg)              # or stage="prepare" / "manifest" / "variants"
    rows = metalearn.records(result.out)                # trial records: a list of dicts
    table = metalearn.summary(rows)                     # per (variant, algorithm, protocol, k): means, CIs
    diffs = metalearn.comparisons(rows, reference="finetune")
    metalearn.to_dataframe(table)                       # a pandas DataFrame, when pandas is installed

    adapter = metalearn.build_adapter("protonet", metalearn.AdapterSpec(dim=64, ways=4))
    logits = adapter.predict(support_x, support_y, query_x, 4)   # [E, S, D], [E, S], [E, Q, D] -> [E, Q, W]

Everything else in the package is internal: its names may change between versions, these do not.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from metalearn.configs.kinds import kind_name
from metalearn.configs.load import load_config as _load_config
from metalearn.fewshot.algorithms import ALGORITHMS, AdapterSpec, build_adapter
from metalearn.fewshot.episode_io import load_episodes, save_episodes
from metalearn.pretune.export import export_variant, push_to_hub
from metalearn.report.compare import comparisons
from metalearn.report.records import read_trials
from metalearn.report.summary import summarize
from metalearn.run.runner import RunResult
from metalearn.util.errors import MetalearnError

__all__ = ["ALGORITHMS", "AdapterSpec", "RunResult", "build_adapter", "comparisons", "export_variant",
           "load_config", "load_episodes", "make_corpora", "push_to_hub", "records", "run_experiment",
           "save_episodes", "summary", "to_dataframe"]
STAGES = ("all", "prepare", "manifest", "variants")


def _dotlist(overrides: Mapping[str, object] | Sequence[str] | None) -> list[str]:
    """``{"episodes.ks": [1, 5]}`` -> ``["episodes.ks=[1, 5]"]`` (JSON values are YAML); strings pass as they are."""
    if overrides is None:
        return []
    if isinstance(overrides, str):
        raise MetalearnError(f"overrides {overrides!r}: expected a list of key=value strings or a dict")
    if isinstance(overrides, Mapping):
        return [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in overrides.items()]
    return list(overrides)


def load_config(preset: str | os.PathLike | None = None,
                overrides: Mapping[str, object] | Sequence[str] | None = None, kind: str | None = None):
    """An experiment config: defaults, then the preset (a name such as ``demo`` or a YAML path), then overrides.

    ``overrides`` is a dict (``{"episodes.ks": [1, 5], "out": "results/mine"}``) or ``key=value`` strings, as on
    the command line. Returns the validated dataclass (``ExperimentConfig``, or the ``loso`` kind's); a bad
    key or value raises :class:`MetalearnError` with one line naming it.
    """
    return _load_config(None if preset is None else str(preset), _dotlist(overrides), kind)


def run_experiment(cfg: object, stage: str = "all", shard: str | None = None):
    """Run ``cfg`` (resumable: finished trials are kept), or only one of its stages.

    stage:
        ``all``: the whole grid, then the report; returns a :class:`RunResult` (``.out`` is the run folder).
        ``prepare``: manifests, pretune variants, episodes and embedding caches, no trials; returns None.
        ``manifest``: the target corpus's manifest rows (written when missing); returns a list of Utterance.
        ``variants``: train the missing pretune variants; returns {name: PretuneVariant}.
    shard: ``"I/N"`` runs the I-th of N parts of the grid (stage ``all`` only).
    A ``loso`` config runs its whole protocol (stage ``all``) and returns its ``LosoResult``.
    """
    from metalearn.run import runner, stages
    from metalearn.run.grid import parse_shard

    if stage not in STAGES:
        raise MetalearnError(f"stage {stage!r}: expected one of {', '.join(STAGES)}")
    if kind_name(cfg) != "fewshot":
        if stage != "all" or shard:
            raise MetalearnError(f"a {cfg.kind} config runs whole (stage 'all', no shard), not stage {stage!r}")
        from metalearn.loso.runner import run_loso_experiment

        return run_loso_experiment(cfg)
    if stage == "manifest":
        return stages.prepare_manifest(cfg.data.target, cfg.data.manifests_dir)
    if stage == "variants":
        return stages.prepare_variants(cfg, train=cfg.pretune.train)
    if shard and stage != "all":
        raise MetalearnError(f"shard {shard!r}: only stage 'all' runs in shards")
    return runner.run_experiment(cfg, parse_shard(shard) if shard else (0, 1), prepare_only=stage == "prepare")


def run_main(cfg: object, shard: str | None = None, prepare: bool = False) -> int:
    """``python -m metalearn run``: ``cfg``'s kind's runner, printing its summary; the exit status."""
    if kind_name(cfg) == "loso":
        from metalearn.loso.runner import main

        return main(cfg, shard, prepare)
    from metalearn.run.runner import main

    return main(cfg, shard, prepare)


def records(run: str | os.PathLike | RunResult) -> list[dict]:
    """The trial records of a run folder (or of a :class:`RunResult`), one dict per trial.

    Keys are the trial record's columns (run, pretune, algorithm, protocol, k, speaker, target_emotion, seed,
    accuracy, macro_f1, weighted_f1, uar, n_support, n_query, seconds, episode_id, ...); numbers are numbers.
    """
    return read_trials(run.out if isinstance(run, RunResult) else run)


def summary(rows: Iterable[dict] | str | os.PathLike | RunResult) -> list[dict]:
    """One row per (pretune, algorithm, protocol, k): means and 95 % intervals over speakers (summary.csv's rows).

    ``rows``: trial records, or a run folder / :class:`RunResult` to read them from.
    """
    if isinstance(rows, str | os.PathLike | RunResult):
        rows = records(rows)
    return summarize(rows)


def to_dataframe(rows: Iterable[dict]):
    """``rows`` (records, summary or comparison rows) as a pandas DataFrame; pandas is optional."""
    try:
        import pandas as pd
    except ImportError:
        raise MetalearnError("to_dataframe needs pandas (pip install pandas); the rows themselves are a "
                             "list of dicts") from None
    return pd.DataFrame(list(rows))


def make_corpora(out: str | os.PathLike, preset: str = "tiny", seed: int = 0) -> dict:
    """Generate the offline synthetic corpora (``tiny``: seconds, for tests; ``demo``: the default) under ``out``.

    Returns {"preset", "seed", "corpora": {name: {"speakers", "utterances", ...}}, "seconds"}; corpora that
    exist already are kept. ``out/esd`` is the few-shot target corpus, in ESD's layout.
    """
    from metalearn.data.synth.generate import generate

    return generate(preset, Path(out), seed=seed)
