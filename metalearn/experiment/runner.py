"""``python -m metalearn run``: one config, the whole grid, resumable, shardable, reported and tracked.

The order of work: check the config and the corpus roots, save the resolved config, prepare the
manifest and the pretune variants, draw (or reload) the evaluation episodes, plan the grid's units,
then score this shard's unfinished units, appending every finished batch of trials to the trial log.
Tables and plots are written from the log alone; W&B mirrors them once the grid is complete.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

from metalearn.data.manifest import Utterance, utterance_key
from metalearn.experiment.config import ExperimentConfig, GridPartConfig
from metalearn.experiment.grid import Subset, Unit, assign_folds, plan_units, shard_units
from metalearn.experiment.run_folder import git_commit, save_config, tracked_config
from metalearn.experiment.scoring import score_group
from metalearn.experiment.stages import (
    check_roots,
    prefill_embeddings,
    prepare_manifest,
    prepare_variants,
    variant_features,
)
from metalearn.fewshot.algorithms import adapter_class
from metalearn.fewshot.episodes import (
    Episode,
    binary_episodes,
    load_episodes,
    nway_episodes,
    save_episodes,
)
from metalearn.pretune.variant import PretuneVariant
from metalearn.report.records import TrialLog, read_logs, read_trials, shard_file, trial_key
from metalearn.util.errors import MetalearnError
from metalearn.util.fileio import write_json
from metalearn.util.lock import run_lock
from metalearn.util.progress import progress

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    out: Path
    planned: int          # trials in the whole grid
    done: int             # trials with a record (all shards)
    ran: int              # trials this call ran
    complete: bool
    reported: dict[str, Path]
    tracking_hint: str | None


def build_episodes(cfg: ExperimentConfig, rows: list[Utterance], speakers: list[str], seed: int,
                   folder: Path) -> list[Episode]:
    """The seed's evaluation episodes, read from ``folder`` when saved there, else drawn and saved."""
    path = folder / f"episodes-seed{seed}.jsonl"
    if path.is_file():
        return load_episodes(path)[0]
    ep = cfg.episodes
    if ep.protocol == "binary":
        targets = ep.targets or sorted({u.emotion for u in rows})
        episodes, skipped = binary_episodes(rows, speakers, targets, ep.ks, ep.repetitions, seed, ep.disjoint)
    else:
        episodes, skipped = [], []
        for k in ep.ks:
            e, s = nway_episodes(rows, speakers, k, ep.repetitions, seed, ep.classes, ep.queries, ep.disjoint)
            episodes += e
            skipped += s
    for s in skipped[:5]:
        log.warning("skipped episode %s: %s", s.episode_id, s.reason)
    if len(skipped) > 5:
        log.warning("... %d skipped episodes in all (listed in %s)", len(skipped), path)
    if not episodes:
        raise MetalearnError(f"no episode could be drawn for seed {seed}: {skipped[0].reason if skipped else ''}")
    save_episodes(path, episodes, skipped)
    return episodes


def run_experiment(cfg: ExperimentConfig, shard: tuple[int, int] = (0, 1), prepare_only: bool = False
                   ) -> RunResult | None:
    """Run (or finish) this shard of the config's grid; write the report from every record present.

    ``prepare_only``: manifests, pretune variants, episodes and every variant's embeddings, then stop
    (run it once before starting shards in parallel, so they do not train or embed the same thing twice).
    """
    out = Path(cfg.out)
    check_roots(cfg)
    with run_lock(out, shard):  # another run into this folder is refused; shards of one grid coexist
        return _run_locked(cfg, out, shard, prepare_only)


def _run_locked(cfg: ExperimentConfig, out: Path, shard: tuple[int, int], prepare_only: bool) -> RunResult | None:
    save_config(cfg, out)
    write_json(out / f"run{'' if shard[1] == 1 else f'-shard{shard[0] + 1}'}.json",
               {"git_commit": git_commit(), "started": time.time(), "shard": f"{shard[0] + 1}/{shard[1]}"})
    rows = [u for u in prepare_manifest(cfg.data.target, cfg.data.manifests_dir)
            if u.speaker not in set(cfg.speakers.exclude)]
    # Shards running side by side must not train the same variant at once: they need it trained already.
    variants = prepare_variants(cfg, train=cfg.pretune.train and (shard[1] == 1 or prepare_only))
    speakers = sorted({u.speaker for u in rows})
    folds = assign_folds(speakers, cfg.speakers.folds, cfg.speakers.seed, cfg.speakers.test)
    episodes = {s: build_episodes(cfg, rows, speakers, s, out) for s in cfg.seeds}
    units = _plan(cfg, variants, folds, episodes)
    if prepare_only:
        prefill_embeddings(cfg, list(variants.values()), rows)
        for variant in variants.values():
            variant_features(cfg, variant, rows)
        return None
    trial_log = TrialLog(out / shard_file(*shard))
    mine = shard_units(units, *shard)
    done_before = {trial_key(r) for r in read_logs(out)}
    todo = [u for u in mine if any(_key(u, e) not in done_before for e in u.episodes)]
    total = sum(len(u.episodes) for u in mine)
    prefill_embeddings(cfg, [variants[v] for v in dict.fromkeys(u.variant for u in todo)], rows)
    ran = _run_units(cfg, todo, variants, rows, folds, trial_log, done_before, total)
    return _finish(cfg, out, units, ran)


def _plan(cfg: ExperimentConfig, variants: dict[str, PretuneVariant], folds: list[list[str]],
          episodes: dict[int, list[Episode]]) -> list[Unit]:
    """The grid's units; which part of the grid each algorithm runs on follows from its declarations."""
    algos = cfg.algorithms
    for name, part in algos.only.items():
        unknown = sorted(set(part.variants or ()) - set(variants))
        if unknown:
            raise MetalearnError(f"config key 'algorithms.only.{name}.variants': {unknown} are not among this run's "
                                 f"pretune variants ({', '.join(variants)})")
    classes = {a: adapter_class(a) for a in algos.run}
    per_episode = [a for a, c in classes.items() if c.per_episode]
    per_k = [a for a in algos.run if a not in per_episode] if cfg.meta_train.shots is None else []
    with_prior = frozenset(v for v, variant in variants.items() if variant.has_prior)
    only = {}
    for a, c in classes.items():
        part = algos.only.get(a, GridPartConfig())
        ks, chosen = _set(part.ks), _set(part.variants)
        if not c.uses_support:  # it ignores the support set: scored once, on the smallest k's episodes, as k = 0
            ks = frozenset({min(cfg.episodes.ks)})
        if c.needs_prior:
            chosen = with_prior if chosen is None else chosen & with_prior
        only[a] = Subset(ks, part.repetitions, chosen)
    return plan_units(list(variants), cfg.seeds, folds, algos.run, episodes, per_k=per_k, chunk=cfg.chunk,
                      only=only, slow=per_episode)


def _set(values: list | None) -> frozenset | None:
    return None if values is None else frozenset(values)


def _key(unit: Unit, e: Episode) -> tuple:
    return unit.variant, unit.algorithm, e.episode_id, unit.seed


def _run_units(cfg: ExperimentConfig, todo: list[Unit], variants: dict[str, PretuneVariant], rows: list[Utterance],
               folds: list[list[str]], trial_log: TrialLog, done: set, total: int) -> int:
    ran = 0
    initial = total - sum(len(u.episodes) for u in todo)
    with progress(total, f"{cfg.name} trials", "trial", initial=initial, disable=not todo) as bar:
        for variant, by_variant in groupby(todo, key=lambda u: u.variant):
            kept, x = variant_features(cfg, variants[variant], rows)
            index_of = {utterance_key(u): i for i, u in enumerate(kept)}
            for _, units in groupby(by_variant, key=lambda u: u.group):
                for unit, records in score_group(cfg, list(units), variants[variant], kept, x, index_of, folds):
                    trial_log.append([r for r in records if trial_key(r) not in done])
                    ran += len(records)
                    bar.update(len(unit.episodes))
    return ran


def _finish(cfg: ExperimentConfig, out: Path, units: list[Unit], ran: int) -> RunResult:
    from metalearn.report.tables import write_report

    records = read_trials(out)
    have = {trial_key(r) for r in records}
    planned = {_key(u, e) for u in units for e in u.episodes}
    complete = planned <= have
    reported = write_report(out, records, reference=cfg.report.reference)
    hint = _track(cfg, out, records, reported) if complete else None
    if not complete:
        log.info("%d of %d trials have records; run the other shards (or this command again) to finish",
                 len(planned & have), len(planned))
    return RunResult(out, len(planned), len(planned & have), ran, complete, reported, hint)


def _track(cfg: ExperimentConfig, out: Path, records: list[dict], reported: dict[str, Path]) -> str | None:
    from metalearn.fewshot.trials import RECORD_FIELDS
    from metalearn.report.summary import summarize
    from metalearn.report.tracking import Tracker

    with Tracker(out, cfg.name, tracked_config(cfg), cfg.tracking) as tracker:
        tracker.log_curves(summarize(records))
        tracker.log_table("trials", records, RECORD_FIELDS)
        tracker.log_images({k: p for k, p in reported.items() if str(p).endswith(".png")})
        hint = tracker.finish()
    return hint


def main(cfg: ExperimentConfig, shard: str | None = None, prepare: bool = False) -> int:
    """``python -m metalearn run`` for a few-shot config: run this shard, print the summary and where it went."""
    from metalearn.experiment.grid import parse_shard
    from metalearn.report.summary import summarize
    from metalearn.report.tables import summary_table

    result = run_experiment(cfg, parse_shard(shard) if shard else (0, 1), prepare_only=prepare)
    if result is None:
        print(f"prepared {cfg.out}: manifests, pretune variants, episodes and embeddings; now run the shards")
        return 0
    print(summary_table(summarize(read_trials(result.out))))
    state = "complete" if result.complete else "incomplete (run the other shards, then `report`)"
    print(f"{result.done}/{result.planned} trials ({result.ran} run now), {state}; results in {result.out}/")
    for name, path in result.reported.items():
        print(f"  {name}: {path}")
    if result.tracking_hint:
        print(result.tracking_hint)
    return 0
