"""``python -m metalearn run``: one config, the whole grid, resumable, shardable, reported and tracked.

The order of work: check the config and the corpus roots, read the manifest, assign the three-way speaker
folds (``folds.json``: test, validation and meta-training speakers) and read the tuned overlay, draw the
evaluation episodes not saved yet (N-way: with their speaker's evaluation split as the validation set, where
the corpus has one) and check the grid against the pretune variants' names; only then save the resolved
config (tuned values included) and the episodes, prepare the pretune variants, plan the grid's units
(:func:`plan`), and score this shard's unfinished units, appending every finished batch of trials to the
trial log (and every trial that cannot be scored, a clip without an embedding, to the skip log). Tables and
plots are written from the logs alone (:func:`finish`); W&B mirrors them once every planned trial has a
trial or a skip record.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass
from pathlib import Path

from metalearn.data.corpus_config import manifest_path, prepare_manifest
from metalearn.data.manifest import Utterance
from metalearn.fewshot.episode_io import save_episodes
from metalearn.fewshot.episodes import Skipped
from metalearn.report.content import QueryLog, query_file, query_records, shares_content
from metalearn.report.records import (
    SkipLog,
    TrialLog,
    read_logs,
    read_skips,
    read_trials,
    shard_file,
    skip_file,
    skip_summary,
    skipped_only,
    trial_key,
)
from metalearn.run.config import ExperimentConfig
from metalearn.run.draw import build_episodes, draw_episodes
from metalearn.run.folds_file import config_folds, read_folds, write_folds
from metalearn.run.grid import Fold, OnSkip, Unit, shard_units
from metalearn.run.inputs import RunInputs
from metalearn.run.layer_choice import choose_layers
from metalearn.run.learned import fitting_sources, write_inputs_report
from metalearn.run.planning import check_grid, learns_across_speakers, plan, variant_names
from metalearn.run.run_folder import save_config, tracked_config, work_in
from metalearn.run.scoring import Sinks, run_workers, score_units
from metalearn.run.stages import (
    check_roots,
    prefill_embeddings,
    prepare_variants,
    source_rows,
    source_speakers,
    variant_features,
)
from metalearn.run.tuned import apply_tuned
from metalearn.util.errors import MetalearnError
from metalearn.util.fileio import write_json
from metalearn.util.lock import run_lock
from metalearn.util.progress import Stopwatch, progress
from metalearn.util.provenance import provenance, refuse_dirty_results

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    out: Path
    planned: int          # trials in the whole grid
    done: int             # trials with a trial or a skip record (all shards)
    ran: int              # trials this call ran
    complete: bool
    reported: dict[str, Path]
    tracking_hint: str | None
    skipped: int = 0      # of ``done``, trials that could not be scored (skip records only)
    skip_reasons: str = ""  # how many were skipped and why, in one phrase ("" when none)


def speaker_folds(cfg: ExperimentConfig, speakers: list[str], out: Path | None = None,
                  sources: list[Utterance] = ()) -> list[Fold]:
    """The run's three-way folds, each meta-training also on the speakers of ``sources`` (:func:`source_rows`);
    with ``out``, checked against (and saved as) ``out/folds.json``.

    A run folder holding work but no folds.json predates validation speakers: it is finished only with
    ``speakers.validation=0`` (its folds), never continued with other meta-training speakers.
    """
    sp = cfg.speakers
    folds = config_folds(sp, speakers)  # speakers.folds_file, else drawn
    if sources:
        folds = [dataclasses.replace(f, meta_train_sources=source_speakers(list(sources))) for f in folds]
    if out is None:
        return folds
    saved = out / "folds.json"
    if saved.is_file():
        if read_folds(saved) != folds:  # a damaged file is one line naming it
            raise MetalearnError(f"{saved}: the run's folds differ from this config's (speakers or speakers.* "
                                 f"changed); use another out=... or delete the folder")
    elif work_in(out) is not None and any(f.validation for f in folds):
        raise MetalearnError(f"{out} holds work of a run without validation speakers (no folds.json): finish it "
                             f"with speakers.validation=0, or use another out=...")
    write_folds(saved, folds)
    return folds


def run_experiment(cfg: ExperimentConfig, shard: tuple[int, int] = (0, 1), prepare_only: bool = False
                   ) -> RunResult | None:
    """Run (or finish) this shard of the config's grid; write the report from every record present.

    ``prepare_only``: manifests, pretune variants, episodes and every variant's embeddings, then stop
    (run it once before starting shards in parallel, so they do not train or embed the same thing twice).
    """
    out = Path(cfg.out)
    check_roots(cfg)
    refuse_dirty_results(out)
    with run_lock(out, shard):  # another run into this folder is refused; shards of one grid coexist
        return _run_locked(cfg, out, shard, prepare_only)


@dataclass(frozen=True)
class Logs:
    """Where a shard's results go: trial records, skip records and (for the content check) per-query hits."""

    trials: TrialLog
    skips: SkipLog
    queries: QueryLog | None


def target_rows(cfg: ExperimentConfig) -> list[Utterance]:
    """The target corpus's manifest rows outside ``speakers.exclude`` (written from its root when missing); none
    is a one-line error."""
    every = prepare_manifest(cfg.data.target, cfg.data.manifests_dir)
    rows = [u for u in every if u.speaker not in set(cfg.speakers.exclude)]
    unknown = sorted(set(cfg.speakers.exclude) - {u.speaker for u in every} - {"Unknown"})
    if unknown:  # a typo excludes nothing; "Unknown" (the default, MSP-Podcast's pseudo-speaker) is not named
        log.warning("config key 'speakers.exclude': %s are not speakers of the target corpus %s; they exclude "
                    "nothing", unknown, cfg.data.target.corpus)
    if not rows:
        raise MetalearnError(f"{manifest_path(cfg.data.target, cfg.data.manifests_dir)}: no utterance of any speaker "
                             f"(outside speakers.exclude {cfg.speakers.exclude}); expected a manifest with rows")
    return rows


def prepared(cfg: ExperimentConfig, rows: list[Utterance], episodes_folder: Path, train: bool) -> RunInputs:
    """The inputs ``tune`` and ``status`` plan from (no layers chosen), as the runner makes them (the runner
    itself interleaves these steps with its checks, so that a config mistake writes nothing): episodes read from
    (or drawn into) ``episodes_folder``, variants trained only when ``train``; ``rows``: :func:`target_rows`."""
    speakers = sorted({u.speaker for u in rows})
    sources = fitting_sources(cfg, rows, source_rows(cfg))
    folds = speaker_folds(cfg, speakers, sources=sources)
    variants = prepare_variants(cfg, train=train)
    episodes = {s: build_episodes(cfg, rows, speakers, s, episodes_folder) for s in cfg.seeds}
    return RunInputs(rows, folds, variants, episodes, sources=sources)


def _run_locked(cfg: ExperimentConfig, out: Path, shard: tuple[int, int], prepare_only: bool) -> RunResult | None:
    clock = Stopwatch()
    rows, offered = target_rows(cfg), source_rows(cfg)
    sources = fitting_sources(cfg, rows, offered)  # the source speakers whose clips fit a meta-training task
    speakers = sorted({u.speaker for u in rows})
    cfg = apply_tuned(cfg, speaker_folds(cfg, speakers))  # config.yaml records the tuned values it runs with
    # Every check of the config comes before the first write into the folder: episodes not saved yet are drawn
    # (a config that draws none fails here), the grid is checked against the variants' names (none trained).
    drawn = {s: draw_episodes(cfg, rows, speakers, s) for s in cfg.seeds
             if not (out / f"episodes-seed{s}.jsonl").is_file()}
    check_grid(cfg, variant_names(cfg))
    save_config(cfg, out)
    folds = speaker_folds(cfg, speakers, out, sources)
    for s, (drawn_episodes, skipped) in drawn.items():
        save_episodes(out / f"episodes-seed{s}.jsonl", drawn_episodes, skipped)
    suffix = "" if shard[1] == 1 else f"-shard{shard[0] + 1}"
    write_json(out / f"run{suffix}.json", provenance(cfg.device, shard=f"{shard[0] + 1}/{shard[1]}",
                                                     workers=run_workers(cfg)))
    with clock.stage("pretune variants"):  # shards side by side must not train one variant twice: trained first
        variants = prepare_variants(cfg, train=cfg.pretune.train and (shard[1] == 1 or prepare_only))
    episodes = {s: drawn[s][0] if s in drawn else build_episodes(cfg, rows, speakers, s, out) for s in cfg.seeds}
    inputs = RunInputs(rows, folds, variants, episodes, sources=sources)
    write_inputs_report(cfg, out, inputs, offered)
    # Every variant's embeddings, sharing frozen layers: what --prepare is for, and what the layer choice reads.
    with clock.stage("embeddings and layer choice"):
        if prepare_only or cfg.features.choose_layer:
            prefill_embeddings(cfg, list(variants.values()), rows)
        inputs = dataclasses.replace(inputs, layers=choose_layers(cfg, variants, rows, folds, episodes, out))
    if prepare_only:
        for variant in variants.values():
            variant_features(cfg, variant, rows)
        return None
    result = _score(cfg, out, shard, inputs, clock)
    clock.write(out / f"timing{suffix}.json")
    return result


def _score(cfg: ExperimentConfig, out: Path, shard: tuple[int, int], inputs: RunInputs, clock: Stopwatch
           ) -> RunResult:
    """Score this shard's unfinished units of the grid into the run folder's logs; then :func:`finish`."""
    units = plan(cfg, inputs.variants, inputs.folds, inputs.episodes)
    # per-query correctness of the episodes whose support and query may share a sentence (the content check)
    shared = any(shares_content(e) for eps in inputs.episodes.values() for e in eps)
    logs = Logs(TrialLog(out / shard_file(*shard)), SkipLog(out / skip_file(*shard)),
                QueryLog(out / query_file(*shard)) if shared else None)
    mine = shard_units(units, *shard)
    done_before = {trial_key(r) for r in [*read_logs(out), *read_skips(out)]}  # a skipped trial is done too
    todo = [u for u in mine if any(u.trial_key(e) not in done_before for e in u.episodes)]
    total = sum(len(u.episodes) for u in mine)
    with clock.stage("trials"):
        if not cfg.features.choose_layer:
            prefill_embeddings(cfg, [inputs.variants[v] for v in dict.fromkeys(u.variant for u in todo)],
                               inputs.rows)
        if inputs.sources:  # the source speakers' clips, for the variants whose learners meta-train on them
            learns = functools.partial(learns_across_speakers, cfg)
            keys = dict.fromkeys((u.algorithm, u.fold, u.variant) for u in todo)
            learners = dict.fromkeys(variant for (algorithm, fold, variant) in keys if learns(algorithm, fold, variant))
            prefill_embeddings(cfg, [inputs.variants[v] for v in learners], inputs.sources)
        ran = _run_units(cfg, inputs, todo, logs, done_before, total)
    with clock.stage("report"):
        return finish(cfg, out, units, ran, write=shard[1] == 1)  # a shard never writes the folder's report


def _skipper(skip_log: SkipLog, bar) -> OnSkip:
    """What scoring calls with a unit's unscorable episodes: one skip record each (keyed like its trial)."""
    def skip(unit: Unit, lost: list[Skipped]) -> None:
        log.warning("%s / %s: %d episode(s) skipped (first: %s: %s)", unit.variant, unit.algorithm, len(lost),
                    lost[0].episode_id, lost[0].reason)
        skip_log.extend([{"pretune": unit.variant, "algorithm": unit.algorithm, "episode_id": s.episode_id,
                          "seed": unit.seed, "meta_seed": unit.meta_seed, "protocol": s.protocol, "k": s.k,
                          "speaker": s.speaker, "reason": s.reason} for s in lost])
        bar.update(len(lost))
    return skip


def _run_units(cfg: ExperimentConfig, inputs: RunInputs, todo: list[Unit], logs: Logs, done: set, total: int) -> int:
    """Score the units ``todo`` (planned in order of variant, layer and group) into ``logs``, in :func:`run_workers`
    processes (:func:`metalearn.run.scoring.score_units`); how many trials ran."""
    ran = [0]
    initial = total - sum(len(u.episodes) for u in todo)
    with progress(total, f"{cfg.name} trials", "trial", initial=initial, disable=not todo) as bar:

        def write(unit: Unit, records: list[dict]) -> None:  # in this process only: the logs have one writer
            new = [r for r in records if trial_key(r) not in done]
            if logs.queries is not None:  # first: a kill between the two logs runs the trial again
                logs.queries.extend(query_records(unit.episodes, new))
            logs.trials.extend(new)
            ran[0] += len(records)
            bar.update(len(records))

        score_units(cfg, inputs, todo, Sinks(write, _skipper(logs.skips, bar)), run_workers(cfg))
    return ran[0]


def finish(cfg: ExperimentConfig, out: Path, units: list[Unit], ran: int, write: bool = True) -> RunResult:
    """Count the records of run folder ``out`` against the planned trials of ``units``; with ``write``, write its
    report from every record present and mirror W&B when the grid is complete (every planned trial has a trial
    or a skip record). Shards pass ``write=False``: the report job (or ``report``) writes once, one W&B run."""
    from metalearn.report.tables import write_report

    records = read_trials(out)
    skips = skipped_only(read_skips(out), records)
    have = {trial_key(r) for r in [*records, *skips]}
    planned = {u.trial_key(e) for u in units for e in u.episodes}
    complete = planned <= have
    reported = write_report(out, records, reference=cfg.report.reference) if write and records else {}
    hint = _track(cfg, out, records, reported) if write and complete else None
    if not complete:
        log.info("%d of %d trials have records; run the other shards (or this command again) to finish",
                 len(planned & have), len(planned))
    elif not write:
        log.info("the grid is complete; write its report with: python -m metalearn report %s", out)
    skipped = [s for s in skips if trial_key(s) in planned]
    return RunResult(out, len(planned), len(planned & have), ran, complete, reported, hint, len(skipped),
                     skip_summary(skipped) if skipped else "")


def _track(cfg: ExperimentConfig, out: Path, records: list[dict], reported: dict[str, Path]) -> str | None:
    from metalearn.fewshot.trials import RECORD_FIELDS
    from metalearn.report.summary import summarize
    from metalearn.report.tracking import Tracker

    with Tracker(out, cfg.name, tracked_config(cfg), cfg.tracking) as tracker:
        summary_rows = summarize(records)
        tracker.log_curves(summary_rows)
        tracker.log_line_charts(summary_rows)
        tracker.log_table("trials", records, RECORD_FIELDS, out / "trials.csv")
        tracker.log_images({k: p for k, p in reported.items() if str(p).endswith(".png")})
        hint = tracker.finish()
    return hint


def main(cfg: ExperimentConfig, shard: str | None = None, prepare: bool = False) -> int:
    """``python -m metalearn run`` for a few-shot config: run this shard, print the summary and where it went."""
    from metalearn.report.summary import summarize
    from metalearn.report.tables import summary_table
    from metalearn.run.grid import parse_shard

    result = run_experiment(cfg, parse_shard(shard) if shard else (0, 1), prepare_only=prepare)
    if result is None:
        print(f"prepared {cfg.out}: manifests, pretune variants, episodes and embeddings; now run the shards")
        return 0
    print(summary_table(summarize(read_trials(result.out))))
    state = "complete" if result.complete else "incomplete (run the other shards, then `report`)"
    print(f"{result.done}/{result.planned} trials ({result.ran} run now), {state}; results in {result.out}/")
    if result.skipped:
        print(f"  {result.skip_reasons}")
    for name, path in result.reported.items():
        print(f"  {name}: {path}")
    if result.tracking_hint:
        print(result.tracking_hint)
    return 0
