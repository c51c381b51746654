"""``python -m metalearn run``: one config, the whole grid, resumable, shardable, reported and tracked.

The order of work: check the config and the corpus roots, read the manifest, assign the three-way speaker
folds (``folds.json``: test, validation and meta-training speakers) and read the tuned overlay, save the
resolved config (tuned values included), prepare the pretune variants, draw (or reload) the evaluation
episodes (N-way: with their speaker's evaluation split as the validation set, where the corpus has one),
plan the grid's units, then score this shard's unfinished units, appending every finished batch of trials
to the trial log. Tables and plots are written from the log alone; W&B mirrors them once the grid is complete.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

from metalearn.data.manifest import Utterance, utterance_key
from metalearn.experiment.config import ExperimentConfig, GridPartConfig
from metalearn.experiment.grid import Fold, Subset, Unit, plan_units, shard_units, three_way_folds
from metalearn.experiment.run_folder import git_commit, save_config, tracked_config, work_in
from metalearn.experiment.scoring import score_group
from metalearn.experiment.stages import (
    check_roots,
    manifest_path,
    prefill_embeddings,
    prepare_manifest,
    prepare_variants,
    variant_features,
)
from metalearn.experiment.tuned import apply_tuned
from metalearn.fewshot.algorithms import adapter_class
from metalearn.fewshot.episode_io import load_episodes, save_episodes
from metalearn.fewshot.episodes import EVALUATION, Episode, binary_episodes, nway_episodes
from metalearn.pretune.variant import PretuneVariant
from metalearn.report.content import QueryLog, query_file, query_records, shares_content
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
        if ep.validation or (ep.validation is None and any(u.split == EVALUATION for u in rows)):
            episodes = with_validation(episodes, rows)
    for s in skipped[:5]:
        log.warning("skipped episode %s: %s", s.episode_id, s.reason)
    if len(skipped) > 5:
        log.warning("... %d skipped episodes in all (listed in %s)", len(skipped), path)
    if not episodes:
        raise MetalearnError(f"no episode could be drawn for seed {seed}: {skipped[0].reason if skipped else ''}")
    save_episodes(path, episodes, skipped)
    return episodes


def with_validation(episodes: list[Episode], rows: list[Utterance]) -> list[Episode]:
    """N-way episodes whose validation set is their speaker's whole evaluation split restricted to the episode's
    classes (sorted by key), as the binary protocol has; a speaker without one gets an empty set.

    No random draw: the episodes' support and query are unchanged.
    """
    pools: dict[str, list[tuple[str, str]]] = {}
    for u in rows:
        if u.split == EVALUATION:
            pools.setdefault(u.speaker, []).append((utterance_key(u), u.emotion))
    out = []
    for e in episodes:
        items = sorted((key, e.classes.index(emotion)) for key, emotion in pools.get(e.speaker, [])
                       if emotion in e.classes)
        out.append(dataclasses.replace(e, validation=tuple(k for k, _ in items),
                                       validation_labels=tuple(label for _, label in items)))
    return out


def speaker_folds(cfg: ExperimentConfig, speakers: list[str], out: Path | None = None) -> list[Fold]:
    """The run's three-way folds; with ``out``, checked against (and saved as) ``out/folds.json``.

    A run folder holding work but no folds.json predates validation speakers: it is finished only with
    ``speakers.validation=0`` (its folds), never continued with other meta-training speakers.
    """
    sp = cfg.speakers
    folds = three_way_folds(speakers, sp.folds, sp.seed, sp.test, sp.validation)
    if out is None:
        return folds
    saved, mine = out / "folds.json", [dataclasses.asdict(f) for f in folds]
    mine = [{k: list(v) if isinstance(v, tuple) else v for k, v in f.items()} for f in mine]
    if saved.is_file():
        if json.loads(saved.read_text(encoding="utf-8")) != mine:
            raise MetalearnError(f"{saved}: the run's folds differ from this config's (speakers or speakers.* "
                                 f"changed); use another out=... or delete the folder")
    elif work_in(out) is not None and any(f.validation for f in folds):
        raise MetalearnError(f"{out} holds work of a run without validation speakers (no folds.json): finish it "
                             f"with speakers.validation=0, or use another out=...")
    write_json(saved, mine)
    return folds


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
    rows = [u for u in prepare_manifest(cfg.data.target, cfg.data.manifests_dir)
            if u.speaker not in set(cfg.speakers.exclude)]
    speakers = sorted({u.speaker for u in rows})
    if not speakers:
        raise MetalearnError(f"{manifest_path(cfg.data.target, cfg.data.manifests_dir)}: no utterance of any speaker "
                             f"(outside speakers.exclude {cfg.speakers.exclude}); expected a manifest with rows")
    cfg = apply_tuned(cfg, speaker_folds(cfg, speakers))  # config.yaml records the tuned values it runs with
    save_config(cfg, out)
    folds = speaker_folds(cfg, speakers, out)
    write_json(out / f"run{'' if shard[1] == 1 else f'-shard{shard[0] + 1}'}.json",
               {"git_commit": git_commit(), "started": time.time(), "shard": f"{shard[0] + 1}/{shard[1]}"})
    # Shards running side by side must not train the same variant at once: they need it trained already.
    variants = prepare_variants(cfg, train=cfg.pretune.train and (shard[1] == 1 or prepare_only))
    episodes = {s: build_episodes(cfg, rows, speakers, s, out) for s in cfg.seeds}
    units = _plan(cfg, variants, folds, episodes)
    if prepare_only:
        prefill_embeddings(cfg, list(variants.values()), rows)
        for variant in variants.values():
            variant_features(cfg, variant, rows)
        return None
    trial_log = TrialLog(out / shard_file(*shard))
    # per-query correctness of the episodes whose support and query may share a sentence (the content check)
    shared = any(shares_content(e) for eps in episodes.values() for e in eps)
    query_log = QueryLog(out / query_file(*shard)) if shared else None
    mine = shard_units(units, *shard)
    done_before = {trial_key(r) for r in read_logs(out)}
    todo = [u for u in mine if any(_key(u, e) not in done_before for e in u.episodes)]
    total = sum(len(u.episodes) for u in mine)
    prefill_embeddings(cfg, [variants[v] for v in dict.fromkeys(u.variant for u in todo)], rows)
    ran = _run_units(cfg, todo, variants, rows, folds, trial_log, query_log, done_before, total)
    return _finish(cfg, out, units, ran)


def _plan(cfg: ExperimentConfig, variants: dict[str, PretuneVariant], folds: list[Fold],
          episodes: dict[int, list[Episode]], scored: str = "test") -> list[Unit]:
    """The grid's units; which part of the grid each algorithm runs on follows from its declarations.

    ``scored``: which speakers of each fold are scored ("test"; tuning scores "validation").
    """
    algos = cfg.algorithms
    for name, part in algos.only.items():
        unknown = sorted(set(part.variants or ()) - set(variants))
        if unknown:
            raise MetalearnError(f"config key 'algorithms.only.{name}.variants': {unknown} are not among this run's "
                                 f"pretune variants ({', '.join(variants)})")
    classes = {a: adapter_class(a) for a in algos.run}
    per_episode = [a for a, c in classes.items() if c.per_episode]
    per_k = [a for a, c in classes.items() if a not in per_episode and c.trains_on == "tasks"
             ] if cfg.meta_train.shots is None else []
    with_prior = frozenset(v for v, variant in variants.items() if variant.has_prior)
    only = {}
    for a, c in classes.items():
        part = algos.only.get(a, GridPartConfig())
        ks, chosen = _set(part.ks), _set(part.variants)
        if not c.uses_support:  # it ignores the support set: scored once, on the smallest k's episodes, as k = 0
            ks = frozenset({min(cfg.episodes.ks)})
        if c.needs_prior:
            chosen = with_prior if chosen is None else chosen & with_prior
        only[a] = Subset(ks, part.repetitions, chosen, zero=c.zero_point)
    return plan_units(list(variants), cfg.seeds, [getattr(f, scored) for f in folds], algos.run, episodes,
                      per_k=per_k, chunk=cfg.chunk, only=only, slow=per_episode)


def _set(values: list | None) -> frozenset | None:
    return None if values is None else frozenset(values)


def _key(unit: Unit, e: Episode) -> tuple:
    return unit.variant, unit.algorithm, e.episode_id, unit.seed


def _run_units(cfg: ExperimentConfig, todo: list[Unit], variants: dict[str, PretuneVariant], rows: list[Utterance],
               folds: list[Fold], trial_log: TrialLog,
               query_log: QueryLog | None, done: set, total: int) -> int:
    ran = 0
    initial = total - sum(len(u.episodes) for u in todo)
    with progress(total, f"{cfg.name} trials", "trial", initial=initial, disable=not todo) as bar:
        for variant, by_variant in groupby(todo, key=lambda u: u.variant):
            kept, x = variant_features(cfg, variants[variant], rows)
            index_of = {utterance_key(u): i for i, u in enumerate(kept)}
            for _, units in groupby(by_variant, key=lambda u: u.group):
                for unit, records in score_group(cfg, list(units), variants[variant], kept, x, index_of, folds):
                    new = [r for r in records if trial_key(r) not in done]
                    if query_log is not None:  # first: a kill between the two logs runs the trial again
                        query_log.extend(query_records(unit.episodes, new))
                    trial_log.extend(new)
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
