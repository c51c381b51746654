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
from metalearn.fewshot.episodes import Episode
from metalearn.fewshot.tasks import SpeakerTaskSampler
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
        sampler = SpeakerTaskSampler(torch.zeros(len(rows), 1), [u.emotion for u in rows], speakers,
                                     sorted(set(speakers)), ways, shots, queries, 0, protocol,
                                     sentences=[sentence_key(u) for u in rows], splits=[u.split for u in rows],
                                     disjoint=disjoint)
    except MetalearnError:
        return []
    return list(sampler.speakers)


def learned_from(cfg: ExperimentConfig, rows: Sequence[Utterance], sources: Sequence[Utterance],
                 folds: Sequence[Fold], example: Episode) -> list[dict]:
    """Per fold: the target's meta-training speakers and clips, and per source corpus its speakers, clips and
    the speakers that fit a meta-training task shaped like the run's (``example``'s ways, ``meta_train.shots``
    or the smallest k, ``meta_train.queries``)."""
    ways = 2 if example.protocol == "binary" else len(example.classes)
    shots = cfg.meta_train.shots or min(cfg.episodes.ks)
    by_corpus: dict[str, list[Utterance]] = {}
    for u in sources:
        by_corpus.setdefault(u.corpus, []).append(u)
    fits = {c: task_speakers(us, ways, shots, cfg.meta_train.queries, example.protocol, cfg.episodes.disjoint)
            for c, us in by_corpus.items()}
    target_clips = Counter(u.speaker for u in rows if example.protocol == "binary" or u.emotion in example.classes)
    out = []
    for f in folds:
        corpora = {}
        for corpus, speakers in sorted(f.meta_train_sources.items()):
            mine = set(speakers)
            corpora[corpus] = {"speakers": len(mine), "task_speakers": len(mine & set(fits.get(corpus, ()))),
                               "clips": sum(u.speaker in mine for u in by_corpus.get(corpus, ()))}
        out.append({"fold": f.fold, "meta_train": {"speakers": len(f.meta_train),
                                                   "clips": sum(target_clips[s] for s in f.meta_train)},
                    "sources": corpora, "task": {"ways": ways, "shots": shots, "queries": cfg.meta_train.queries}})
    return out


def write_learned(out: Path, records: list[dict]) -> Path:
    """Write ``learned.json`` (atomic); returns its path."""
    write_json(out / LEARNED, records)
    return out / LEARNED


def write_inputs_report(cfg: ExperimentConfig, out: Path, inputs: RunInputs) -> None:
    """What each arm learned from: ``learned.json`` (per fold) and, for variants with a pre-finetuning record,
    ``pretune.json`` / ``pretune.md`` (source accuracy beside the frozen probe)."""
    from metalearn.pretune.records import variant_record, write_pretune_report

    example = next((e for eps in inputs.episodes.values() for e in eps), None)
    if example is not None:
        write_learned(out, learned_from(cfg, inputs.rows, inputs.sources, inputs.folds, example))
    records = [variant_record(v.folder) for v in inputs.variants.values()]
    if any(records):
        write_pretune_report(records, out)
