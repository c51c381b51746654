"""The few-shot experiment's config schema: one dataclass per section, each the config of the part it feeds.

Every section is the dataclass of the constructor it feeds (``PretuneConfig``, ``EmbeddingConfig``,
``BackboneConfig``, each algorithm's own config, ``TrackingConfig``), so a YAML file holds values only and
code below the entry point receives plain dataclasses. The ``algorithms`` section is assembled from the
algorithm registry. Loading (defaults, preset, overrides, one-line errors) is :mod:`metalearn.configs.load`.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any

from metalearn.clap.config import ClapStageConfig, check_stage
from metalearn.data.corpus_config import CorpusConfig
from metalearn.features.backbones import BackboneConfig
from metalearn.features.embeddings import EmbeddingConfig
from metalearn.fewshot.algorithms import ALGORITHMS, adapter_class, config_class
from metalearn.fewshot.episodes import PROTOCOLS
from metalearn.pretune.config import PretuneConfig
from metalearn.report.tracking import TrackingConfig, resolve_mode
from metalearn.util.errors import MetalearnError


@dataclass
class DataConfig:
    manifests_dir: str = "data/demo/manifests"
    target: CorpusConfig = field(default_factory=CorpusConfig)      # the few-shot corpus (speakers are tasks)
    sources: dict[str, CorpusConfig] = field(default_factory=dict)  # pre-finetuning corpora, by name


@dataclass
class PretuneStageConfig:
    out: str = "runs/demo/pretune"
    subsets: list[str] = field(default_factory=lambda: ["none"])  # ["all"] or e.g. ["none", "iemocap+cremad"]
    train: bool = True            # train missing variants; False: a missing variant is an error
    recipe: PretuneConfig = field(default_factory=PretuneConfig)
    clap: ClapStageConfig = field(default_factory=ClapStageConfig)  # GEmo-CLAP variants, one per loss
    extra: dict[str, str] = field(default_factory=dict)  # name -> an exported variant or transformers
                                  # folder, or a hub id: run beside the trained variants, never trained


@dataclass
class FeaturesConfig:
    layer: int = -1               # which hidden state of the cached [L + 1, D] embeddings (-1: the last): the
                                  # fixed choice (and the CLAP variants' input is their own)
    mean_layers: bool = False     # average every hidden state instead
    standardize: bool = True      # z-score with the meta-training speakers' statistics (per fold)
    choose_layer: bool = False    # per (supervised variant, fold): the hidden state whose SimpleShot accuracy on
                                  # the fold's validation speakers is best (ties: the later), instead of layer;
                                  # recorded in the run's layers.json and layers.md
    candidates: list[int] | None = None  # the hidden states choose_layer tries (None: every one; -1: the last)


@dataclass
class EpisodesConfig:
    protocol: str = "nway"                  # nway (k per class) or binary (Paper A: k in total)
    ks: list[int] = field(default_factory=lambda: [1, 2, 5, 10])
    repetitions: int = 5
    queries: int | None = None              # nway: queries per class from the test split (None: all)
    classes: list[str] | None = None        # nway: the label set (None: the emotions every speaker has)
    targets: list[str] | None = None        # binary: target emotions (None: every emotion of the corpus)
    disjoint: str = "text"                  # text: where a speaker has no official split, support and query
                                            # never share a sentence; none: one pool
    validation: bool | None = None          # nway: each episode's model-selection set is its speaker's evaluation
                                            # split (as binary has); None: where the corpus has one (ESD)
    source: str | None = None               # a folder holding episodes-seed<S>.jsonl (another run's, or a shared
                                            # copy): score those episodes instead of drawing; None: draw


@dataclass
class SpeakersConfig:
    folds: int = 2                          # each speaker tested once, meta-trained on the other folds
    test: list[str] | None = None           # or name the test speakers (one fold)
    exclude: list[str] = field(default_factory=lambda: ["Unknown"])  # never tasks (MSP-Podcast's pseudo-speaker)
    seed: int = 0                           # assignment of speakers to folds
    validation: int = 1                     # per fold, drawn from the non-test speakers: for tuning and choices,
                                            # never learned from; 0: two-way folds (every other speaker meta-trains)
    folds_file: str | None = None           # a folds.json (e.g. from `folds --emobox`) used instead of
                                            # drawing folds; then folds, test and validation are unused


@dataclass
class MetaTrainConfig:
    steps: int = 300
    shots: int | None = None      # None: meta-train once per k, with the k tested; n: once, with n shots
    queries: int = 5              # per class (binary: in total, even)
    seeds: list[int] = field(default_factory=lambda: [0])  # each method that learns across speakers is
                                  # meta-trained once per seed (records carry meta_seed); others once, meta_seed 0
    sources: list[str] = field(default_factory=list)  # names in data.sources whose speakers also meta-train
                                  # (each a task over its own emotions; transfer: its clips of the target's
                                  # emotions), so the learners see the labelled pool pre-finetuning sees


@dataclass
class TuneConfig:
    """``python -m metalearn tune``: one Optuna study per method and fold, on the fold's validation speakers."""

    trials: int = 20                        # per method, variant and fold, the same for every method (the first
                                            # is the hand-set config)
    seed: int = 0                           # the TPE sampler's seed
    algorithms: list[str] | None = None     # None: every algorithm of algorithms.run that has a search space
    variant: str = ""                       # the pretune variant tuned ("": every variant; a name: that one alone)
    meta_steps: list[int] = field(default_factory=lambda: [25, 50, 100, 200])  # choices for methods that learn
                                            # across speakers (meta-training / training steps)


@dataclass
class TunedVariant:
    """One pretune variant's tuned values in one fold, chosen on its own features (they win over the fold's)."""

    algorithms: dict[str, dict[str, Any]] = field(default_factory=dict)  # algorithm -> its config fields
    meta_steps: dict[str, int] = field(default_factory=dict)             # algorithm -> meta-training steps


@dataclass
class TunedFold:
    """One fold's tuned values, as ``tune`` chose them on the fold's validation speakers."""

    fold: int = 0
    validation: list[str] = field(default_factory=list)   # the speakers they were chosen on
    meta_train: list[str] = field(default_factory=list)   # the speakers every trial learned from
    algorithms: dict[str, dict[str, Any]] = field(default_factory=dict)  # algorithm -> its config fields
    meta_steps: dict[str, int] = field(default_factory=dict)             # algorithm -> meta-training steps
    variants: dict[str, TunedVariant] = field(default_factory=dict)      # variant -> its own values (else the
                                                                          # fold-level ones above)


@dataclass
class TunedConfig:
    """The overlay ``tune`` writes: per fold, the winners of its studies; ``file`` is read into ``folds``."""

    file: str = ""                          # a tuned overlay (a path, or a name under the presets, e.g. tuned/demo)
    folds: list[TunedFold] = field(default_factory=list)


@dataclass
class ReportConfig:
    reference: str = "finetune"   # comparisons.csv: every algorithm against this one, on identical episodes


@dataclass
class GridPartConfig:
    """The part of the grid one algorithm runs on (None: all); e.g. a slow method at fewer ks."""

    ks: list[int] | None = None               # only these ks
    repetitions: int | None = None            # only the first n repetitions
    variants: list[str] | None = None         # only these pretune variants


def _algorithms_config() -> type:
    """``algorithms``: which to run, the grid part of each, and one section per registered algorithm holding
    its own config dataclass (assembled from the registry, so a new method needs no line here)."""
    fields = [("run", list[str], field(default_factory=lambda: ["finetune", "simpleshot", "protonet", "maml"])),
              ("only", dict[str, GridPartConfig], field(default_factory=dict))]
    fields += [(name, config_class(name), field(default_factory=config_class(name))) for name in ALGORITHMS]
    cls = dataclasses.make_dataclass("AlgorithmsConfig", fields)
    cls.__module__ = __name__
    return cls


AlgorithmsConfig = _algorithms_config()


@dataclass
class ExperimentConfig:
    kind: str = "fewshot"         # which experiment schema a preset fills (see KINDS)
    name: str = "experiment"
    out: str = "results/${name}"
    seeds: list[int] = field(default_factory=lambda: [0])
    device: str = "cpu"           # where the embedding-level algorithms run (auto: cuda when available)
    chunk: int = 512              # episodes per vectorised batch
    workers: int = 0              # processes scoring the trials side by side (0: one per CPU; 1: this process;
                                  # on a GPU always 1), one torch thread each when > 1 (run/scoring.py)
    data: DataConfig = field(default_factory=DataConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    embeddings: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    pretune: PretuneStageConfig = field(default_factory=PretuneStageConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    episodes: EpisodesConfig = field(default_factory=EpisodesConfig)
    speakers: SpeakersConfig = field(default_factory=SpeakersConfig)
    meta_train: MetaTrainConfig = field(default_factory=MetaTrainConfig)
    algorithms: AlgorithmsConfig = field(default_factory=AlgorithmsConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    tuned: TunedConfig = field(default_factory=TunedConfig)


def validate(cfg: ExperimentConfig) -> None:
    """Cross-field checks no type can express; one line each."""
    if cfg.kind != "fewshot":
        raise MetalearnError(f"config key 'kind': {cfg.kind!r} in a few-shot experiment config")
    validate_ranges(cfg)
    ep, algos = cfg.episodes, cfg.algorithms
    if ep.protocol not in PROTOCOLS:
        raise MetalearnError(f"config key 'episodes.protocol': {ep.protocol!r} is not one of {PROTOCOLS}")
    if not ep.ks or min(ep.ks) < 1 or (ep.protocol == "binary" and any(k % 2 for k in ep.ks)):
        raise MetalearnError(f"config key 'episodes.ks': {ep.ks} must be >= 1 (binary: even)")
    if ep.disjoint not in ("text", "none"):
        raise MetalearnError(f"config key 'episodes.disjoint': {ep.disjoint!r} is not one of ('text', 'none')")
    known = list(ALGORITHMS)
    for name in algos.run:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=2)
            raise MetalearnError(f"config key 'algorithms.run': unknown algorithm {name!r}"
                                 + (f"; did you mean {', '.join(close)}?" if close else f"; known: {known}"))
    if len(set(algos.run)) != len(algos.run) or not algos.run:
        raise MetalearnError(f"config key 'algorithms.run': {algos.run} must list distinct algorithms")
    check_stage(cfg.pretune.clap)
    for name in algos.only:  # a part for an algorithm the run leaves out is unused (presets stay overridable)
        if name not in known:
            raise MetalearnError(f"config key 'algorithms.only.{name}': {name!r} is not a registered algorithm "
                                 f"({', '.join(known)})")
    prompted = [a for a in algos.run if adapter_class(a).needs_prior]
    if prompted and not cfg.pretune.clap.losses:
        raise MetalearnError(f"config key 'algorithms.run': {prompted} need CLAP variants for their prompt prior "
                             f"(set pretune.clap.losses, e.g. [emo, sl])")
    if prompted and ep.protocol != "nway":
        raise MetalearnError(f"config key 'algorithms.run': {prompted} classify by emotion prompts and need "
                             f"episodes.protocol=nway, not {ep.protocol!r}")
    if cfg.speakers.test is None and cfg.speakers.folds < 1:
        raise MetalearnError(f"config key 'speakers.folds': {cfg.speakers.folds} must be >= 1")
    if cfg.speakers.validation < 0:
        raise MetalearnError(f"config key 'speakers.validation': {cfg.speakers.validation} must be >= 0")
    if cfg.tune.trials < 1:
        raise MetalearnError(f"config key 'tune.trials': {cfg.tune.trials} must be >= 1")
    if not cfg.tune.meta_steps or min(cfg.tune.meta_steps) < 1:
        raise MetalearnError(f"config key 'tune.meta_steps': {cfg.tune.meta_steps} must be a non-empty list of "
                             f"integers >= 1")
    if cfg.tracking.wandb:
        resolve_mode(cfg.tracking)  # an unknown W&B mode fails now, not after the grid
    if not cfg.seeds or len(set(cfg.seeds)) != len(cfg.seeds) or min(cfg.seeds) < 0:
        raise MetalearnError(f"config key 'seeds': {cfg.seeds} must be distinct integers >= 0")


def validate_ranges(cfg: ExperimentConfig) -> None:
    """Every count and size the grid uses, in range before anything is written (one line naming the key and what
    is allowed); each algorithm's own fields are checked by its config's ``RANGES`` (:mod:`metalearn.util.ranges`)."""
    mt, ep, sp = cfg.meta_train, cfg.episodes, cfg.speakers
    bounds: list[tuple[str, object, int]] = [
        ("chunk", cfg.chunk, 1), ("workers", cfg.workers, 0), ("meta_train.steps", mt.steps, 0),
        ("meta_train.shots", mt.shots, 1), ("meta_train.queries", mt.queries, 1),
        ("episodes.repetitions", ep.repetitions, 1), ("episodes.queries", ep.queries, 1), ("speakers.seed", sp.seed, 0),
        ("backbone.layers", cfg.backbone.layers, 1),
        *((f"algorithms.only.{name}.repetitions", part.repetitions, 1) for name, part in cfg.algorithms.only.items()),
        *((f"algorithms.only.{name}.ks", min(part.ks), 1) for name, part in cfg.algorithms.only.items() if part.ks)]
    for key, value, low in bounds:
        if value is not None and value < low:
            unit = {"chunk": " (episodes per batch)", "meta_train.steps": " (0: no meta-training)"}.get(key, "")
            raise MetalearnError(f"config key {key!r}: {value} must be >= {low}{unit}")
    if not mt.seeds or len(set(mt.seeds)) != len(mt.seeds) or min(mt.seeds) < 0:
        raise MetalearnError(f"config key 'meta_train.seeds': {mt.seeds} must be distinct integers >= 0")
    if sp.test is not None and not sp.test and not sp.folds_file:
        raise MetalearnError("config key 'speakers.test': [] names no test speaker; name at least one, e.g. "
                             "speakers.test=[\"0011\"], or leave it unset (null) to draw speakers.folds folds")
    if sp.test is not None and len(set(sp.test)) != len(sp.test):
        raise MetalearnError(f"config key 'speakers.test': {sp.test} names a speaker twice")
