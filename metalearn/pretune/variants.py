"""Every subset of the source corpora is a pretune variant: train the missing ones, load any of them.

A variant folder ``{out}/{variant_name}/`` holds ``config.json`` (written first), ``curve.jsonl``,
``backbone.safetensors`` (the backbone's state dict), ``heads.safetensors``, ``summary.json`` and, last,
``done.json``. A folder without ``done.json`` (a killed run) is trained again; one with it is skipped.
The "none" variant (the untouched backbone) holds only ``config.json`` and ``done.json``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from metalearn.data.manifest import Utterance
from metalearn.features.backbones import BackboneConfig, SpeechBackbone, build_backbone
from metalearn.pretune.config import PretuneConfig
from metalearn.pretune.data import CorpusSplits, build_splits
from metalearn.pretune.distributed import barrier, from_main, is_main, world
from metalearn.pretune.model import MultiHeadClassifier, freeze_all_but_top
from metalearn.pretune.train import TrainResult, jsonable, train
from metalearn.util.errors import MetalearnError
from metalearn.util.fileio import atomic_path, write_json

log = logging.getLogger(__name__)
NONE = "none"
WEIGHTS = "backbone.safetensors"


def enumerate_subsets(corpora: Iterable[str]) -> list[tuple[str, ...]]:
    """The empty subset ("none") first, then the 2^n - 1 non-empty ones by size, each sorted by name."""
    names = sorted(set(corpora))
    return [()] + [c for k in range(1, len(names) + 1) for c in itertools.combinations(names, k)]


def variant_name(subset: Sequence[str]) -> str:
    """"none" for the empty subset, else "pft-" + the sorted corpus names joined by "+"."""
    return NONE if not subset else "pft-" + "+".join(sorted(subset))


def parse_subsets(spec: str, corpora: Sequence[str]) -> list[tuple[str, ...]]:
    """``all`` or a comma list like ``iemocap+msp_podcast,cremad,none`` -> subsets (validated, unique)."""
    if spec.strip() == "all":
        return enumerate_subsets(corpora)
    subsets: list[tuple[str, ...]] = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        subset = () if item == NONE else tuple(sorted(set(item.split("+"))))
        unknown = [c for c in subset if c not in corpora]
        if unknown:
            raise MetalearnError(f"subset {item!r}: corpora {unknown} are not in the manifests "
                                 f"(present: {', '.join(sorted(corpora))})")
        if subset not in subsets:
            subsets.append(subset)
    if not subsets:
        raise MetalearnError(f"--subsets {spec!r} names no subset; use all or CORPUS+CORPUS,...")
    return subsets


def _write_json(path: Path, obj: object) -> None:
    """Atomic JSON write (strict JSON: NaN -> null)."""
    write_json(path, jsonable(obj), indent=2)


def _save_tensors(module: torch.nn.Module, path: Path) -> None:
    """``module``'s state dict as safetensors (CPU copies, so shared storage is never an issue); atomic."""
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in module.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))


def _variant_config(subset: tuple[str, ...], cfg: PretuneConfig, backbone_cfg: BackboneConfig,
                    splits: dict[str, CorpusSplits]) -> dict:
    return {"variant": variant_name(subset), "subset": list(subset), "corpora": list(subset),
            "weights": WEIGHTS if subset else None,
            "pretune": dataclasses.asdict(cfg), "backbone": dataclasses.asdict(backbone_cfg),
            "label_sets": {c: list(splits[c].labels) for c in subset},
            "split_sizes": {c: splits[c].sizes() for c in subset},
            "own_split": {c: splits[c].own_split for c in subset},
            "dropped": {c: splits[c].dropped for c in subset}, "world_size": world()[0]}


def train_variant(subset: tuple[str, ...], splits: dict[str, CorpusSplits], folder: Path, cfg: PretuneConfig,
                  backbone_cfg: BackboneConfig, device: torch.device,
                  build: Callable[[BackboneConfig], SpeechBackbone] = build_backbone) -> TrainResult:
    """Build a fresh backbone (seeded), pre-finetune it on ``subset`` and save the variant into ``folder``."""
    if is_main():
        folder.mkdir(parents=True, exist_ok=True)
        _write_json(folder / "config.json", _variant_config(subset, cfg, backbone_cfg, splits))
    torch.manual_seed(cfg.seed)
    backbone = build(backbone_cfg)
    trainable = freeze_all_but_top(backbone, cfg.trainable_layers)
    model = MultiHeadClassifier(backbone, {c: splits[c].labels for c in subset}, cfg.layer)
    log.info("%s: %s, %d trainable backbone parameters", variant_name(subset), backbone.name, trainable)
    result = train(model, {c: splits[c] for c in subset}, cfg, device, curve_path=folder / "curve.jsonl")
    if is_main():
        _save_tensors(backbone, folder / WEIGHTS)
        _save_tensors(model.heads, folder / "heads.safetensors")
        _write_json(folder / "summary.json", {"variant": variant_name(subset), **dataclasses.asdict(result)})
        _write_json(folder / "done.json", {"variant": variant_name(subset), "finished": time.time()})
    barrier()
    return result


def _write_none(folder: Path, backbone_cfg: BackboneConfig) -> None:
    """The untouched backbone: a config pointing at its source, no weights."""
    if is_main():
        folder.mkdir(parents=True, exist_ok=True)
        _write_json(folder / "config.json", {"variant": NONE, "subset": [], "corpora": [], "weights": None,
                                             "backbone": dataclasses.asdict(backbone_cfg),
                                             "note": "the untouched backbone: build it from `backbone`"})
        _write_json(folder / "done.json", {"variant": NONE, "finished": time.time()})
    barrier()


def run_variants(utterances: Sequence[Utterance], subsets: Sequence[tuple[str, ...]], out: str | os.PathLike,
                 cfg: PretuneConfig, backbone_cfg: BackboneConfig, device: torch.device,
                 build: Callable[[BackboneConfig], SpeechBackbone] = build_backbone) -> dict[str, str]:
    """Train every variant of ``subsets`` that has no ``done.json`` under ``out``; variant -> status."""
    out = Path(out)
    used = sorted({c for s in subsets for c in s})
    splits = build_splits(utterances, cfg.seed, corpora=used, labels=cfg.labels) if used else {}
    status: dict[str, str] = {}
    for subset in subsets:
        name = variant_name(subset)
        folder = out / name
        if from_main((folder / "done.json").is_file()):
            log.info("%s: already done (%s exists), skipping", name, folder / "done.json")
            _warn_if_config_differs(folder, cfg, backbone_cfg, bool(subset))
            status[name] = "skipped (done)"
        elif not subset:
            _write_none(folder, backbone_cfg)
            status[name] = "written"
        else:
            log.info("%s: training into %s", name, folder)
            train_variant(subset, splits, folder, cfg, backbone_cfg, device, build)
            status[name] = "trained"
    return status


def _warn_if_config_differs(folder: Path, cfg: PretuneConfig, backbone_cfg: BackboneConfig,
                            trained: bool) -> None:
    saved = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if saved.get("backbone") != dataclasses.asdict(backbone_cfg) or (
            trained and saved.get("pretune") != jsonable(dataclasses.asdict(cfg))):
        log.warning("%s: its saved config differs from this run's; delete the folder to retrain", folder.name)


def load_variant(variant_dir: str | os.PathLike, backbone: SpeechBackbone) -> SpeechBackbone:
    """``backbone`` (freshly built from the variant's backbone config) holding the variant's weights.

    Strict: every key must match. The "none" variant returns ``backbone`` untouched.
    """
    folder = Path(variant_dir)
    if not (folder / "done.json").is_file():
        raise MetalearnError(f"pretune variant {folder} is not finished (no done.json)")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if config.get("weights") is None:
        return backbone
    state = load_file(str(folder / config["weights"]))
    try:
        backbone.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise MetalearnError(f"{folder / config['weights']} does not fit this backbone: "
                             f"{str(e).splitlines()[0]}") from None
    backbone.name = f"{backbone.name}@{config['variant']}"
    return backbone


def backbone_for_variant(variant_dir: str | os.PathLike,
                         build: Callable[[BackboneConfig], SpeechBackbone] = build_backbone
                         ) -> SpeechBackbone:
    """Build the variant's backbone from its saved config and load its weights (eval mode)."""
    path = Path(variant_dir) / "config.json"
    if not path.is_file():
        raise MetalearnError(f"{variant_dir} is not a pretune variant (no config.json)")
    config = json.loads(path.read_text(encoding="utf-8"))
    return load_variant(variant_dir, build(BackboneConfig(**config["backbone"]))).eval()
