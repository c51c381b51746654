"""A run's evaluation episodes: drawn once per seed (or imported from another run) and saved in the run folder.

N-way episodes get their speaker's evaluation split as the validation set where the corpus has one; the
binary protocol draws its own. Drawing writes nothing (:func:`draw_episodes`), so the runner can check a config
before its first write; :func:`build_episodes` reads the saved file back when it exists.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from metalearn.data.manifest import Utterance, utterance_key
from metalearn.fewshot.episode_io import load_episodes, save_episodes
from metalearn.fewshot.episodes import EVALUATION, Episode, NwayRule, Skipped, binary_episodes, nway_episodes
from metalearn.run.config import ExperimentConfig
from metalearn.util.errors import MetalearnError

log = logging.getLogger(__name__)


def build_episodes(cfg: ExperimentConfig, rows: list[Utterance], speakers: list[str], seed: int,
                   folder: Path) -> list[Episode]:
    """The seed's evaluation episodes, read from ``folder`` when saved there, else drawn and saved."""
    path = folder / f"episodes-seed{seed}.jsonl"
    if path.is_file():
        return load_episodes(path)[0]
    episodes, skipped = draw_episodes(cfg, rows, speakers, seed)
    save_episodes(path, episodes, skipped)
    return episodes


def draw_episodes(cfg: ExperimentConfig, rows: list[Utterance], speakers: list[str], seed: int
                  ) -> tuple[list[Episode], list[Skipped]]:
    """The seed's evaluation episodes and the ones that could not be drawn, with their reasons; writes nothing.
    None drawn is a one-line error. With ``episodes.source`` they are read from that folder instead."""
    ep = cfg.episodes
    if ep.source:
        return imported_episodes(Path(ep.source) / f"episodes-seed{seed}.jsonl", rows)
    if ep.protocol == "binary":
        targets = ep.targets or sorted({u.emotion for u in rows})
        episodes, skipped = binary_episodes(rows, speakers, targets, ep.ks, ep.repetitions, seed, ep.disjoint)
    else:
        episodes, skipped = [], []
        for k in ep.ks:
            e, s = nway_episodes(rows, speakers, k, ep.repetitions, seed, NwayRule(ep.classes, ep.queries, ep.disjoint))
            episodes += e
            skipped += s
        if ep.validation or (ep.validation is None and any(u.split == EVALUATION for u in rows)):
            episodes = with_validation(episodes, rows)
    for s in skipped[:5]:
        log.warning("skipped episode %s: %s", s.episode_id, s.reason)
    if len(skipped) > 5:
        log.warning("... %d skipped episodes in all (listed in episodes-seed%d.jsonl)", len(skipped), seed)
    if not episodes:
        raise MetalearnError(f"no episode could be drawn for seed {seed}: {skipped[0].reason if skipped else ''}")
    return episodes, skipped


def imported_episodes(path: Path, rows: list[Utterance]) -> tuple[list[Episode], list[Skipped]]:
    """Episodes saved by another run (the JSON Lines of :mod:`metalearn.fewshot.episode_io`), every utterance
    key checked against this run's manifest."""
    if not path.is_file():
        raise MetalearnError(f"config key 'episodes.source': no {path}; expected a folder holding the run's "
                             f"episodes-seed<S>.jsonl files")
    episodes, skipped = load_episodes(path)
    keys = {utterance_key(u) for u in rows}
    unknown = [k for e in episodes for k in (*e.support, *e.query, *e.validation) if k not in keys]
    if unknown or not episodes:
        raise MetalearnError(f"{path}: {len(unknown)} utterance keys are not in this run's manifest (first: "
                             f"{unknown[0]})" if unknown else f"{path}: no episode")
    return episodes, skipped


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
