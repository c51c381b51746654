"""What each arm of the comparison learned from, per fold: ``learned.json`` in the run folder.

Pre-finetuning learns from the source corpora's training splits (``pretune.json``); the methods that learn across
speakers learn from the fold's meta-training speakers of the target and, with ``meta_train.sources``, from the
source speakers whose clips fit a meta-training task (each speaker's own emotions; a speaker with too few clips
of enough emotions gives no task). The report reads this file into summary.md, so a reader sees whether both
arms saw the same labelled pool.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch

from metalearn.data.manifest import Utterance
from metalearn.data.sentences import sentence_key
from metalearn.fewshot.tasks import SpeakerTaskSampler, TaskRows, TaskSpec
from metalearn.run.config import ExperimentConfig
from metalearn.run.grid import Fold
from metalearn.run.inputs import RunInputs
from metalearn.util.errors import MetalearnError
from metalearn.util.fileio import write_json

LEARNED = "learned.json"


def task_speakers(rows: Sequence[Utterance], ways: int, shots: int, queries: int, protocol: str,
                  disjoint: str = "text") -> list[str]:
    """The speakers of ``rows`` with enough clips for one meta-training task of this shape, as the meta-training
    sampler draws them (its own emotions; text-disjoint support and query where the speaker has no split)."""
    if not rows:
        return []
    speakers = [u.speaker for u in rows]
    try:
        task_rows = TaskRows([u.emotion for u in rows], speakers, sentences=[sentence_key(u) for u in rows],
                             splits=[u.split for u in rows])
        sampler = SpeakerTaskSampler(torch.zeros(len(rows), 1), task_rows, sorted(set(speakers)),
                                     TaskSpec(ways, shots, queries, protocol, disjoint=disjoint), 0)
    except MetalearnError:
        return []
    return list(sampler.speakers)


def task_shape(cfg: ExperimentConfig, rows: Sequence[Utterance]) -> tuple[int, int, int]:
    """(ways, shots, queries) of the run's smallest meta-training task: the episodes' classes (binary: 2; nway:
    ``episodes.classes`` or the emotions every target speaker has), ``meta_train.shots`` or the smallest k, and
    ``meta_train.queries``."""
    if cfg.episodes.protocol == "binary":
        ways = 2
    elif cfg.episodes.classes:
        ways = len(cfg.episodes.classes)
    else:
        have = [{u.emotion for u in rows if u.speaker == s} for s in sorted({u.speaker for u in rows})]
        ways = len(set.intersection(*have)) if have else 0
    return ways, cfg.meta_train.shots or min(cfg.episodes.ks), cfg.meta_train.queries


def fitting_sources(cfg: ExperimentConfig, rows: Sequence[Utterance], sources: Sequence[Utterance]
                    ) -> list[Utterance]:
    """The rows of the source speakers with enough clips for one meta-training task of :func:`task_shape`
    (speakers without one could never be drawn: their clips are not embedded)."""
    ways, shots, queries = task_shape(cfg, rows)
    by_corpus: dict[str, list[Utterance]] = {}
    for u in sources:
        by_corpus.setdefault(u.corpus, []).append(u)
    keep = {(c, s) for c, us in by_corpus.items()
            for s in task_speakers(us, ways, shots, queries, cfg.episodes.protocol, cfg.episodes.disjoint)}
    return [u for u in sources if (u.corpus, u.speaker) in keep]


def learned_from(cfg: ExperimentConfig, rows: Sequence[Utterance], offered: Sequence[Utterance],
                 folds: Sequence[Fold]) -> list[dict]:
    """Per fold: the target's meta-training speakers and clips, and per source corpus of ``offered`` (the rows
    of ``meta_train.sources``) its speakers, those whose tasks meta-training uses (the fold's
    ``meta_train_sources``) and their clips."""
    ways, shots, queries = task_shape(cfg, rows)
    by_corpus: dict[str, list[Utterance]] = {}
    for u in offered:
        by_corpus.setdefault(u.corpus, []).append(u)
    target_clips = Counter(u.speaker for u in rows)
    out = []
    for f in folds:
        corpora = {}
        for corpus, us in sorted(by_corpus.items()):
            used = set(f.meta_train_sources.get(corpus, ()))
            corpora[corpus] = {"speakers": len({u.speaker for u in us}), "task_speakers": len(used),
                               "clips": sum(u.speaker in used for u in us)}
        out.append({"fold": f.fold, "meta_train": {"speakers": len(f.meta_train),
                                                   "clips": sum(target_clips[s] for s in f.meta_train)},
                    "sources": corpora, "task": {"ways": ways, "shots": shots, "queries": queries}})
    return out


def write_learned(out: Path, records: list[dict]) -> Path:
    """Write ``learned.json`` (atomic); returns its path."""
    write_json(out / LEARNED, records)
    return out / LEARNED


def write_inputs_report(cfg: ExperimentConfig, out: Path, inputs: RunInputs, offered: Sequence[Utterance]) -> None:
    """What each arm learned from: ``learned.json`` (per fold; ``offered``: every row of ``meta_train.sources``,
    of which ``inputs.sources`` fit a task) and, for variants with a pre-finetuning record,
    ``pretune.json`` / ``pretune.md`` (source accuracy beside the frozen probe)."""
    from metalearn.pretune.records import variant_record, write_pretune_report

    write_learned(out, learned_from(cfg, inputs.rows, offered, inputs.folds))
    records = [variant_record(v.folder) for v in inputs.variants.values()]
    if any(records):
        write_pretune_report(records, out)
