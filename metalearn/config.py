"""The experiment config: dataclass defaults, then a YAML preset, then ``key=value`` overrides (OmegaConf).

Every section is the dataclass of the constructor it feeds (``PretuneConfig``, ``EmbeddingConfig``,
``BackboneConfig``, each algorithm's config, ``TrackingConfig``), so a YAML file holds values only and
code below the entry point receives plain dataclasses, never OmegaConf objects. A misspelt key, a value
of the wrong type or a required value left unset stops the run before any work, with one line naming
the key (and the closest valid keys).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

from metalearn.algorithms import ALGORITHMS, config_class
from metalearn.algorithms.finetune import FinetuneConfig
from metalearn.algorithms.full_finetune import FullFinetuneConfig
from metalearn.backbones import BackboneConfig
from metalearn.embeddings import EmbeddingConfig
from metalearn.episodes import PROTOCOLS
from metalearn.errors import MetalearnError
from metalearn.pretune.clap_variant import ClapStageConfig, check_stage
from metalearn.pretune.config import PretuneConfig
from metalearn.tracking import TrackingConfig, resolve_mode

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
FULL_FINETUNE = "full_finetune"
ZERO_SHOT = "zeroshot"       # CLAP variants only: nearest class prompt, the k = 0 point of the curves
TEXT_HEAD = "texthead"       # CLAP variants only: fine-tuning from the class prompts' head
PROMPTED = (ZERO_SHOT, TEXT_HEAD)


@dataclass
class CorpusConfig:
    """A corpus: its loader, its root in the corpus's own layout, and the manifest parsed from it.

    The manifest is read when it exists, else written from ``root`` (then ``root`` must exist).
    """

    corpus: str = "esd"
    root: str = MISSING
    manifest: str = ""                  # "" = {data.manifests_dir}/{corpus}.csv
    classes: list[str] | None = None    # keep only these canonical emotions (IEMOCAP 4-class)


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


@dataclass
class FeaturesConfig:
    layer: int = -1               # which hidden state of the cached [L + 1, D] embeddings (-1: the last)
    mean_layers: bool = False     # average every hidden state instead
    standardize: bool = True      # z-score with the meta-training speakers' statistics (per fold)


@dataclass
class EpisodesConfig:
    protocol: str = "nway"                  # nway (k per class) or binary (Paper A: k in total)
    ks: list[int] = field(default_factory=lambda: [1, 2, 5, 10])
    repetitions: int = 5
    queries: int | None = None              # nway: queries per class from the test split (None: all)
    classes: list[str] | None = None        # nway: the label set (None: the emotions every speaker has)
    targets: list[str] | None = None        # binary: target emotions (None: every emotion of the corpus)


@dataclass
class SpeakersConfig:
    folds: int = 2                          # each speaker tested once, meta-trained on the other folds
    test: list[str] | None = None           # or name the meta-test speakers (one fold)
    exclude: list[str] = field(default_factory=lambda: ["Unknown"])  # never tasks (MSP-Podcast's pseudo-speaker)
    seed: int = 0                           # assignment of speakers to folds


@dataclass
class MetaTrainConfig:
    steps: int = 300
    shots: int | None = None      # None: meta-train once per k, with the k tested; n: once, with n shots
    queries: int = 5              # per class (binary: in total, even)


@dataclass
class AlgorithmsConfig:
    run: list[str] = field(default_factory=lambda: ["finetune", "simpleshot", "protonet", "maml"])
    finetune: config_class("finetune") = field(default_factory=config_class("finetune"))
    simpleshot: config_class("simpleshot") = field(default_factory=config_class("simpleshot"))
    protonet: config_class("protonet") = field(default_factory=config_class("protonet"))
    protonet_proj: config_class("protonet_proj") = field(default_factory=config_class("protonet_proj"))
    maml: config_class("maml") = field(default_factory=config_class("maml"))
    fomaml: config_class("fomaml") = field(default_factory=config_class("fomaml"))
    anil: config_class("anil") = field(default_factory=config_class("anil"))
    metasgd: config_class("metasgd") = field(default_factory=config_class("metasgd"))
    reptile: config_class("reptile") = field(default_factory=config_class("reptile"))
    texthead: FinetuneConfig = field(default_factory=FinetuneConfig)  # CLAP variants: head from class prompts
    full_finetune: FullFinetuneConfig = field(default_factory=FullFinetuneConfig)
    full_finetune_ks: list[int] | None = None          # it is slow: the ks it runs at (None: all)
    full_finetune_repetitions: int | None = None       # and the repetitions (None: all)
    full_finetune_variants: list[str] | None = None    # and the pretune variants (None: all)


@dataclass
class ExperimentConfig:
    kind: str = "fewshot"         # which experiment schema a preset fills (see KINDS)
    name: str = "experiment"
    out: str = "results/${name}"
    seeds: list[int] = field(default_factory=lambda: [0])
    device: str = "cpu"           # where the embedding-level algorithms run (auto: cuda when available)
    chunk: int = 512              # episodes per vectorised batch
    data: DataConfig = field(default_factory=DataConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    embeddings: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    pretune: PretuneStageConfig = field(default_factory=PretuneStageConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    episodes: EpisodesConfig = field(default_factory=EpisodesConfig)
    speakers: SpeakersConfig = field(default_factory=SpeakersConfig)
    meta_train: MetaTrainConfig = field(default_factory=MetaTrainConfig)
    algorithms: AlgorithmsConfig = field(default_factory=AlgorithmsConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


def preset_path(preset: str) -> Path:
    """A preset name (``demo``, ``compare``, ``paper_a``, ...) in experiments/, or a path to a YAML file."""
    path = Path(preset)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise MetalearnError(f"config file {path} does not exist")
        return path
    path = EXPERIMENTS / f"{preset}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in EXPERIMENTS.glob("*.yaml"))
        raise MetalearnError(f"unknown preset {preset!r}; expected one of: {', '.join(names)} (or a .yaml path)")
    return path


# An experiment kind -> (module, config dataclass, validation function): a preset's top-level ``kind``
# picks its schema (default "fewshot"); every kind shares presets, overrides and the one-line errors.
KINDS: dict[str, tuple[str, str, str]] = {
    "fewshot": ("metalearn.config", "ExperimentConfig", "validate"),
    "loso": ("metalearn.loso", "LosoExperimentConfig", "validate"),
}


def schema_of(kind: str) -> tuple[type, object]:
    """(config dataclass, validation function) of an experiment kind."""
    if kind not in KINDS:
        raise MetalearnError(f"config key 'kind': {kind!r} is not one of {', '.join(KINDS)}")
    module, cls, check = KINDS[kind]
    mod = importlib.import_module(module)
    return getattr(mod, cls), getattr(mod, check)


def load_config(preset: str | None = None, overrides: Sequence[str] = (), kind: str | None = None):
    """Defaults, then the preset's YAML, then ``key=value`` overrides; validated, as dataclasses.

    The schema is ``kind``'s, else the one named by the preset's (or an override's) ``kind`` key, else
    :class:`ExperimentConfig`.
    """
    for item in overrides:
        if "=" not in item:
            raise MetalearnError(f"override {item!r} is not key=value (e.g. episodes.ks=[1,5])")
    data = None
    if preset:
        path = preset_path(preset)
        data = _guard(lambda: OmegaConf.load(path), OmegaConf.create({}), f"{path}: ")
    named = [i.split("=", 1)[1] for i in overrides if i.split("=", 1)[0] == "kind"]
    kind = kind or (named[-1] if named else None) or (data.get("kind") if data is not None else None) or "fewshot"
    cls, check = schema_of(str(kind))
    schema = OmegaConf.structured(cls)
    layers = [schema]
    if data is not None:
        layers.append(_guard(lambda: OmegaConf.merge(schema, data), schema, f"{path}: "))
    layers.append(_guard(lambda: OmegaConf.from_dotlist(list(overrides)), schema, "override: "))
    merged = _guard(lambda: OmegaConf.merge(*layers), schema)
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:
        raise MetalearnError(f"config key {missing[0]!r} has no value; set it, e.g. {missing[0]}=/path "
                             f"({len(missing)} unset: {', '.join(missing)})")
    cfg = _guard(lambda: OmegaConf.to_object(merged), schema)
    check(cfg)
    return cfg


def _guard(make, schema: DictConfig, where: str = ""):
    """Run ``make``; OmegaConf errors become one line naming the key (and the closest valid keys)."""
    try:
        return make()
    except ConfigKeyError as e:
        key = e.full_key or str(e.key)
        close = difflib.get_close_matches(key, _all_keys(schema), n=3, cutoff=0.5)
        hint = f"; closest valid keys: {', '.join(close)}" if close else ""
        raise MetalearnError(f"{where}config key {key!r} is not a valid key{hint}") from None
    except MissingMandatoryValue as e:
        raise MetalearnError(f"{where}config key {e.full_key!r} has no value; set it") from None
    except OmegaConfBaseException as e:
        msg = str(e).splitlines()[0]
        key = getattr(e, "full_key", None)
        raise MetalearnError(f"{where}config key {key!r}: {msg}" if key else f"{where}{msg}") from None
    except MetalearnError:
        raise
    except yaml.YAMLError as e:
        raise MetalearnError(f"{where}not valid YAML: {' '.join(str(e).split())}") from None
    except (ValueError, TypeError) as e:  # a dataclass __post_init__ refusing a value, or unreadable YAML
        raise MetalearnError(f"{where}{str(e).splitlines()[0]}") from None


def _all_keys(node: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for k in node.keys():
        full = f"{prefix}{k}"
        keys.append(full)
        child = node._get_node(k)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            keys += _all_keys(child, f"{full}.")
    return keys


def validate(cfg: ExperimentConfig) -> None:
    """Cross-field checks no type can express; one line each."""
    if cfg.kind != "fewshot":
        raise MetalearnError(f"config key 'kind': {cfg.kind!r} in a few-shot experiment config")
    ep, algos = cfg.episodes, cfg.algorithms
    if ep.protocol not in PROTOCOLS:
        raise MetalearnError(f"config key 'episodes.protocol': {ep.protocol!r} is not one of {PROTOCOLS}")
    if not ep.ks or min(ep.ks) < 1 or (ep.protocol == "binary" and any(k % 2 for k in ep.ks)):
        raise MetalearnError(f"config key 'episodes.ks': {ep.ks} must be >= 1 (binary: even)")
    known = [*ALGORITHMS, FULL_FINETUNE, *PROMPTED]
    for name in algos.run:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=2)
            raise MetalearnError(f"config key 'algorithms.run': unknown algorithm {name!r}"
                                 + (f"; did you mean {', '.join(close)}?" if close else f"; known: {known}"))
    if len(set(algos.run)) != len(algos.run) or not algos.run:
        raise MetalearnError(f"config key 'algorithms.run': {algos.run} must list distinct algorithms")
    check_stage(cfg.pretune.clap)
    prompted = [a for a in algos.run if a in PROMPTED]
    if prompted and not cfg.pretune.clap.losses:
        raise MetalearnError(f"config key 'algorithms.run': {prompted} need CLAP variants (set pretune.clap.losses, "
                             f"e.g. [emo, sl])")
    if prompted and ep.protocol != "nway":
        raise MetalearnError(f"config key 'algorithms.run': {prompted} classify by emotion prompts and need "
                             f"episodes.protocol=nway, not {ep.protocol!r}")
    if cfg.speakers.test is None and cfg.speakers.folds < 1:
        raise MetalearnError(f"config key 'speakers.folds': {cfg.speakers.folds} must be >= 1")
    if cfg.tracking.wandb:
        resolve_mode(cfg.tracking)  # an unknown W&B mode fails now, not after the grid
    if not cfg.seeds or len(set(cfg.seeds)) != len(cfg.seeds) or min(cfg.seeds) < 0:
        raise MetalearnError(f"config key 'seeds': {cfg.seeds} must be distinct integers >= 0")


def to_yaml(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML (what :func:`load_config` reads back to the same dataclasses)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def git_commit(root: str | os.PathLike | None = None) -> str:
    """The checkout's commit, with ``-dirty`` when tracked files changed; ``unknown`` outside git."""
    cwd = str(root or Path(__file__).resolve().parents[1])
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def as_dict(cfg: object) -> dict:
    """A dataclass config as plain nested dicts (for trackers and JSON)."""
    return dataclasses.asdict(cfg)
