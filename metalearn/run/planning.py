"""A run's grid from its config: the units, which algorithms are meta-trained once per meta seed, and the
config checks that need the run's data, made before anything is written into the run folder.

:func:`plan` is what the runner, ``status``, ``launch`` and ``tune`` share (``runner.plan``). The pretune
variants' names follow from the config and the source manifests without training any
(:func:`variant_names`), so a misspelt variant in ``algorithms.only.*.variants`` is refused before the run
saves its config or draws its episodes (:func:`check_grid`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from metalearn.fewshot.algorithms import AdapterSpec, adapter_class, build_adapter
from metalearn.fewshot.episodes import Episode
from metalearn.pretune.variant import PretuneVariant
from metalearn.run.config import ExperimentConfig, GridPartConfig
from metalearn.run.grid import Batching, Fold, Subset, Unit, plan_units
from metalearn.run.run_folder import as_dict
from metalearn.run.tuned import meta_steps_for, options_for
from metalearn.util.errors import MetalearnError


def variant_names(cfg: ExperimentConfig) -> list[str]:
    """The run's pretune variant names, in the order :func:`metalearn.run.stages.prepare_variants` gives
    them, from the config and the source manifests alone (nothing is trained or fetched; a missing source
    manifest is written from its corpus root, as the run would). Unknown corpora in ``pretune.subsets`` or
    ``pretune.clap.corpora`` are one-line errors."""
    from metalearn.clap.variant import clap_variant_name
    from metalearn.data.corpus_config import prepare_manifest
    from metalearn.pretune.subsets import parse_subsets, variant_name

    corpora: list[str] = []
    if any(s != "none" for s in cfg.pretune.subsets) or cfg.pretune.clap.losses:  # as prepare_variants reads them
        corpora = sorted({u.corpus for c in cfg.data.sources.values()
                          for u in prepare_manifest(c, cfg.data.manifests_dir)})
    names = [variant_name(s) for s in parse_subsets(",".join(cfg.pretune.subsets), corpora)]
    stage = cfg.pretune.clap
    if stage.losses:
        chosen = corpora if stage.corpora == "all" else sorted(set(stage.corpora.split("+")))
        unknown = sorted(set(chosen) - set(corpora))
        if unknown or not chosen:
            raise MetalearnError(f"config key 'pretune.clap.corpora': {stage.corpora!r} names corpora {unknown} that "
                                 f"are not among data.sources ({', '.join(corpora) or 'none'}); use all or A+B")
        names += [clap_variant_name(loss, chosen) for loss in stage.losses]
    names += list(cfg.pretune.extra)  # named in the config (exported variants, transformers folders, hub ids)
    return list(dict.fromkeys(names))


def check_grid(cfg: ExperimentConfig, variants: Sequence[str]) -> None:
    """The grid's config checks that need the run's pretune variant names (``variants``); one line each."""
    seeds = list(cfg.meta_train.seeds)
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise MetalearnError(f"config key 'meta_train.seeds': {seeds} must be distinct integers >= 0 (at least one)")
    for name, part in cfg.algorithms.only.items():
        unknown = sorted(set(part.variants or ()) - set(variants))
        if unknown:
            raise MetalearnError(f"config key 'algorithms.only.{name}.variants': {unknown} are not among this run's "
                                 f"pretune variants ({', '.join(variants)})")


def learns_across_speakers(cfg: ExperimentConfig, algorithm: str, fold: int, variant: str | None = None) -> bool:
    """Whether ``algorithm`` learns from the fold's meta-training speakers (meta-training, or training on their
    labelled clips as ``transfer`` does) with the fold's options: its adapter ``meta_learns`` and its (tuned)
    meta steps are > 0. Methods built only from audio or a prompt prior answer by their class's declaration;
    the others by a probe built with a 2-d spec (a few parameters, no data)."""
    if cfg.tuned.folds and fold >= len(cfg.tuned.folds):
        return False  # a tuning trial's config tunes its own fold only; the runner never plans such a fold
    if meta_steps_for(cfg, algorithm, fold, variant) == 0:
        return False
    cls = adapter_class(algorithm)
    if cls.inputs != "embeddings" or cls.needs_prior:
        return bool(cls.meta_learns)
    return bool(build_adapter(algorithm, AdapterSpec(2, 2), options_for(cfg, algorithm, fold, variant)).meta_learns)


def meta_seeds(cfg: ExperimentConfig) -> Callable[[str, int, str], tuple[int, ...]]:
    """(algorithm, fold) -> the meta seeds its units are planned for: ``meta_train.seeds`` for a method that
    learns across speakers (:func:`learns_across_speakers`), else (0,): once."""
    seeds, known = tuple(cfg.meta_train.seeds), {}

    def of(algorithm: str, fold: int, variant: str) -> tuple[int, ...]:
        key = (algorithm, fold, variant)
        if key not in known:
            known[key] = seeds if learns_across_speakers(cfg, *key) else (0,)
        return known[key]

    return of


def plan(cfg: ExperimentConfig, variants: dict[str, PretuneVariant], folds: list[Fold],
         episodes: dict[int, list[Episode]], scored: str = "test") -> list[Unit]:
    """The grid's units; which part of the grid each algorithm runs on follows from its declarations.

    ``scored``: which speakers of each fold are scored ("test"; tuning scores "validation").
    """
    algos = cfg.algorithms
    check_grid(cfg, list(variants))
    classes = {a: adapter_class(a) for a in algos.run}
    per_episode = {a: episodes_per_unit(cfg, a) for a, c in classes.items() if c.per_episode}
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
    batching = Batching(cfg.chunk, per_k, only, per_episode, meta_seeds(cfg))
    return plan_units(list(variants), cfg.seeds, [getattr(f, scored) for f in folds], algos.run, episodes, batching)


def episodes_per_unit(cfg: ExperimentConfig, algorithm: str) -> int:
    """A per-episode algorithm's episodes per unit: its ``episodes_per_pass`` (full_finetune adapts that many
    together; 1 when it has no such field)."""
    return max(1, int(as_dict(getattr(cfg.algorithms, algorithm)).get("episodes_per_pass", 1)))


def _set(values: list | None) -> frozenset | None:
    return None if values is None else frozenset(values)
