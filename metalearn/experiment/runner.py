"""``python -m metalearn run``: one config, the whole grid, resumable, shardable, reported and tracked.

The order of work: check the config and the corpus roots, save the resolved config, prepare the
manifest and the pretune variants, draw (or reload) the evaluation episodes, plan the grid's units,
then score this shard's unfinished units, appending every finished batch of trials to the trial log.
Tables and plots are written from the log alone; W&B mirrors them once the grid is complete.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import groupby
from pathlib import Path

import numpy as np
from torch import Tensor

from metalearn.clap.variant import is_clap
from metalearn.data.manifest import Utterance, utterance_key
from metalearn.experiment.config import FULL_FINETUNE, PROMPTED, ZERO_SHOT, ExperimentConfig
from metalearn.experiment.grid import Subset, Unit, assign_folds, plan_units, shard_units
from metalearn.experiment.run_folder import as_dict, git_commit, save_config, tracked_config
from metalearn.experiment.stages import (
    check_roots,
    prefill_embeddings,
    prepare_manifest,
    prepare_variants,
    variant_features,
)
from metalearn.features.featurize import Standardizer
from metalearn.fewshot.algorithms import build_adapter
from metalearn.fewshot.episodes import (
    Episode,
    binary_episodes,
    load_episodes,
    nway_episodes,
    save_episodes,
)
from metalearn.fewshot.tasks import SpeakerTaskSampler
from metalearn.fewshot.trials import run_trials
from metalearn.report.records import TrialLog, read_logs, read_trials, shard_file, trial_key
from metalearn.util.errors import MetalearnError
from metalearn.util.fileio import write_json
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
        episodes, skipped = binary_episodes(rows, speakers, targets, ep.ks, ep.repetitions, seed)
    else:
        episodes, skipped = [], []
        for k in ep.ks:
            e, s = nway_episodes(rows, speakers, k, ep.repetitions, seed, ep.classes, ep.queries)
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
        for folder in variants.values():
            variant_features(cfg, folder, rows)
        return None
    trial_log = TrialLog(out / shard_file(*shard))
    mine = shard_units(units, *shard)
    done_before = {trial_key(r) for r in read_logs(out)}
    todo = [u for u in mine if any(_key(u, e) not in done_before for e in u.episodes)]
    total = sum(len(u.episodes) for u in mine)
    prefill_embeddings(cfg, [variants[v] for v in dict.fromkeys(u.variant for u in todo)], rows)
    ran = _run_units(cfg, todo, variants, rows, folds, trial_log, done_before, total)
    return _finish(cfg, out, units, ran)


def _plan(cfg: ExperimentConfig, variants: dict[str, Path], folds: list[list[str]],
          episodes: dict[int, list[Episode]]) -> list[Unit]:
    algos = cfg.algorithms
    unknown = sorted(set(algos.full_finetune_variants or ()) - set(variants))
    if unknown:
        raise MetalearnError(f"config key 'algorithms.full_finetune_variants': {unknown} are not among this run's "
                             f"pretune variants ({', '.join(variants)})")
    per_k = [a for a in algos.run if a != FULL_FINETUNE] if cfg.meta_train.shots is None else []
    clap = frozenset(v for v, folder in variants.items() if is_clap(folder))
    only = {FULL_FINETUNE: Subset(_set(algos.full_finetune_ks), algos.full_finetune_repetitions,
                                  _set(algos.full_finetune_variants)),
            # zero-shot ignores the support set: it is scored once, on the smallest k's episodes, as k = 0
            ZERO_SHOT: Subset(frozenset({min(cfg.episodes.ks)}), None, clap),
            **{a: Subset(variants=clap) for a in PROMPTED if a != ZERO_SHOT}}
    return plan_units(list(variants), cfg.seeds, folds, algos.run, episodes, per_k=per_k, chunk=cfg.chunk,
                      only=only, slow=(FULL_FINETUNE,))


def _set(values: list | None) -> frozenset | None:
    return None if values is None else frozenset(values)


def _key(unit: Unit, e: Episode) -> tuple:
    return unit.variant, unit.algorithm, e.episode_id, unit.seed


def _run_units(cfg: ExperimentConfig, todo: list[Unit], variants: dict[str, Path], rows: list[Utterance],
               folds: list[list[str]], trial_log: TrialLog, done: set, total: int) -> int:
    ran = 0
    initial = total - sum(len(u.episodes) for u in todo)
    with progress(total, f"{cfg.name} trials", "trial", initial=initial, disable=not todo) as bar:
        for variant, by_variant in groupby(todo, key=lambda u: u.variant):
            kept, x = variant_features(cfg, variants[variant], rows)
            index_of = {utterance_key(u): i for i, u in enumerate(kept)}
            for group, units in groupby(by_variant, key=lambda u: u.group):
                for unit, records in _score(cfg, group, list(units), kept, x, index_of, folds, variants):
                    trial_log.append([r for r in records if trial_key(r) not in done])
                    ran += len(records)
                    bar.update(len(unit.episodes))
    return ran


def _score(cfg: ExperimentConfig, group: tuple, units: list[Unit], rows: list[Utterance], x: Tensor,
           index_of: dict[str, int], folds: list[list[str]], variants: dict[str, Path]
           ) -> Iterator[tuple[Unit, list[dict]]]:
    """Meta-train the group's adapter once, then score each unit (one batch of episodes)."""
    variant, seed, fold, algorithm, meta_k = group
    test = set(folds[fold])
    train_rows = np.array([i for i, u in enumerate(rows) if u.speaker not in test])
    standardizer = Standardizer.identity(x.shape[1])
    if cfg.features.standardize and len(train_rows):
        standardizer = Standardizer.fit(x, train_rows)
        x = standardizer.apply(x)
    shift, scale = standardizer.shift, standardizer.scale
    adapter = None
    for unit in units:
        episodes = _usable(unit.episodes, index_of)
        if not episodes:
            continue
        if algorithm == FULL_FINETUNE:
            from metalearn.fewshot.algorithms.full_finetune import run_trials_full

            adapter = adapter or _full_finetune(cfg, variants[variant], rows)
            yield unit, run_trials_full(adapter, episodes, run=cfg.name, pretune=variant, seed=seed)
            continue
        if algorithm in PROMPTED:
            adapter = adapter or _prompted(cfg, algorithm, variants[variant], episodes[0].classes, shift, scale,
                                           _derived_seed(seed, fold, meta_k))
        else:
            adapter = adapter or _meta_trained(cfg, algorithm, x, rows, train_rows, episodes[0], meta_k,
                                               _derived_seed(seed, fold, meta_k))
        records = run_trials(adapter, episodes, x, index_of, run=cfg.name, pretune=variant, seed=seed,
                             chunk=len(episodes))
        if algorithm == ZERO_SHOT:  # no support item is used: the k = 0 point
            records = [{**r, "k": 0, "n_support": 0} for r in records]
        yield unit, records


def _usable(episodes: Sequence[Episode], index_of: dict[str, int]) -> list[Episode]:
    """Episodes whose every utterance has an embedding (an unreadable file drops its episodes, with a warning)."""
    keep = []
    for e in episodes:
        lost = [k for k in (*e.support, *e.query, *e.validation) if k not in index_of]
        if lost:
            log.warning("episode %s: no embedding for %s (unreadable file); skipped", e.episode_id, lost[0])
        else:
            keep.append(e)
    return keep


def _derived_seed(seed: int, fold: int, meta_k: int) -> int:
    return int(np.random.SeedSequence([seed, fold, meta_k]).generate_state(1)[0])


def _meta_trained(cfg: ExperimentConfig, algorithm: str, x: Tensor, rows: list[Utterance], train_rows: np.ndarray,
                  example: Episode, meta_k: int, seed: int):
    """The algorithm built for the episodes' shape and, when it meta-learns, meta-trained on other speakers."""
    ways = len(example.classes)
    options = as_dict(getattr(cfg.algorithms, algorithm))
    adapter = build_adapter(algorithm, x.shape[1], ways, options, seed=seed, device=cfg.device)
    if not getattr(adapter, "meta_learns", True) or cfg.meta_train.steps == 0:
        return adapter
    if not len(train_rows):
        raise MetalearnError(f"algorithm {algorithm} meta-learns but fold has no meta-training speakers "
                             f"(set speakers.folds >= 2 or name speakers.test)")
    binary = example.protocol == "binary"
    keep = [i for i in train_rows if binary or rows[i].emotion in example.classes]
    shots = meta_k or cfg.meta_train.shots or example.k
    sampler = SpeakerTaskSampler(x[keep], [rows[i].emotion for i in keep], [rows[i].speaker for i in keep],
                                 sorted({rows[i].speaker for i in keep}), ways, shots,
                                 cfg.meta_train.queries, seed + 1, example.protocol, cfg.device)
    adapter.meta_train(sampler, cfg.meta_train.steps)
    return adapter


def _prompt_prior(folder: Path, classes: tuple[str, ...]) -> dict[str, Tensor]:
    """A CLAP variant's zero-shot head over its raw embeddings [E]: weight [E, W], bias [W] (cached per process)."""
    from metalearn.clap.variant import HEADS

    return _prompt_prior_cached(folder, classes, (folder / HEADS).stat().st_mtime_ns)


@lru_cache(maxsize=8)
def _prompt_prior_cached(folder: Path, classes: tuple[str, ...], mtime_ns: int) -> dict[str, Tensor]:
    from metalearn.clap.variant import load_clap_heads, prompt_head

    return prompt_head(load_clap_heads(folder), classes)


def _prompted(cfg: ExperimentConfig, algorithm: str, folder: Path, classes: tuple[str, ...], shift: Tensor,
              scale: Tensor, seed: int):
    """Zero-shot or the text-initialised head of a CLAP variant, over features standardized by (shift, scale)."""
    from metalearn.fewshot.algorithms.text_head import TextHead, ZeroShot, reparametrize

    raw = _prompt_prior(folder, tuple(classes))
    weight, bias = reparametrize(raw["weight"].double(), raw["bias"].double(), shift.double(), scale.double())
    prior = {"weight": weight.float(), "bias": bias.float()}
    if algorithm == ZERO_SHOT:
        return ZeroShot(len(shift), prior, cfg.device)
    return TextHead(len(shift), prior, cfg.algorithms.texthead, seed, cfg.device)


def _full_finetune(cfg: ExperimentConfig, folder: Path, rows: list[Utterance]):
    from metalearn.fewshot.algorithms.full_finetune import FullFinetune
    from metalearn.pretune.variants import backbone_for_variant

    return FullFinetune(lambda: backbone_for_variant(folder), {utterance_key(u): u.path for u in rows},
                        cfg.algorithms.full_finetune)


def _finish(cfg: ExperimentConfig, out: Path, units: list[Unit], ran: int) -> RunResult:
    from metalearn.report.tables import write_report

    records = read_trials(out)
    have = {trial_key(r) for r in records}
    planned = {_key(u, e) for u in units for e in u.episodes}
    complete = planned <= have
    reported = write_report(out, records)
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
