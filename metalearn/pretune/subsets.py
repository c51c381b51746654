"""Every subset of the source corpora is a pretune variant: train the missing ones, load any of them.

A variant folder ``{out}/{variant_name}/`` holds ``config.json`` (written first: the recipe, ``head_layer`` and
the ``fingerprint`` of what made it), ``curve.jsonl``, ``backbone.safetensors`` (the backbone's state dict),
``heads.safetensors``, ``feature.safetensors`` (the z-score and mix weights of the feature the heads read),
``summary.json``, ``record.json`` (accuracy beside the frozen probe, :mod:`metalearn.pretune.records`) and, last,
``done.json``. A folder without ``done.json`` (a killed run) is trained again; one with it is reused only when
its fingerprint matches (:func:`~metalearn.pretune.records.check_fingerprint`), else one line names the
first differing key.
The "none" variant (the untouched backbone) holds only ``config.json`` and ``done.json``.

``done.json`` records the SHA-256 of every checkpoint the variant wrote (``"sha256": {file: hex}``); loading
one (:func:`load_checkpoint`) checks it first, so a damaged or truncated file is one line naming it instead of
silently different weights. Each file is hashed once per process (keyed by path, inode, size and mtime). A
``done.json`` from before the hashes were recorded loads with a warning.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from metalearn.data.manifest import Utterance
from metalearn.features.backbones import BackboneConfig, SpeechBackbone, build_backbone
from metalearn.pretune.config import PretuneConfig
from metalearn.pretune.data import CorpusSplits, build_splits
from metalearn.pretune.distributed import barrier, from_main, is_main, world
from metalearn.pretune.fit import (  # noqa: F401 - HEADS and Training are this module's interface too
    HEADS,
    WEIGHTS,
    Training,
    train_variant,
)
from metalearn.pretune.records import check_fingerprint, variant_fingerprint
from metalearn.pretune.train import jsonable
from metalearn.util.errors import MetalearnError
from metalearn.util.fileio import sha256_file, write_json

log = logging.getLogger(__name__)
NONE = "none"
DONE = "done.json"
_HASHES: dict[tuple[str, int, int, int], str] = {}  # (path, inode, size, mtime_ns) -> SHA-256, this process
_WARNED: set[str] = set()                            # folders whose unhashed done.json was warned about


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


def _variant_config(subset: tuple[str, ...], cfg: PretuneConfig, backbone_cfg: BackboneConfig,
                    splits: dict[str, CorpusSplits], fingerprint: dict) -> dict:
    return {"variant": variant_name(subset), "kind": "supervised", "subset": list(subset), "corpora": list(subset),
            "weights": WEIGHTS if subset else None,
            "pretune": dataclasses.asdict(cfg), "backbone": dataclasses.asdict(backbone_cfg),
            "label_sets": {c: list(splits[c].labels) for c in subset},
            "split_sizes": {c: splits[c].sizes() for c in subset},
            "own_split": {c: splits[c].own_split for c in subset},
            "dropped": {c: splits[c].dropped for c in subset}, "world_size": world()[0],
            "fingerprint": fingerprint}


def _write_none(folder: Path, backbone_cfg: BackboneConfig) -> None:
    """The untouched backbone: a config pointing at its source, no weights."""
    if is_main():
        folder.mkdir(parents=True, exist_ok=True)
        _write_json(folder / "config.json", {"variant": NONE, "kind": NONE, "subset": [], "corpora": [],
                                             "weights": None, "backbone": dataclasses.asdict(backbone_cfg),
                                             "fingerprint": variant_fingerprint((), None, backbone_cfg, []),
                                             "note": "the untouched backbone: build it from `backbone`"})
        write_done(folder, NONE, [])
    barrier()


def run_variants(utterances: Sequence[Utterance], subsets: Sequence[tuple[str, ...]], out: str | os.PathLike,
                 training: Training, train: bool = True) -> dict[str, str]:
    """Train every variant of ``subsets`` that has no ``done.json`` under ``out`` as ``training`` says;
    variant -> status.

    A finished folder is reused only when its fingerprint (:func:`~.records.check_fingerprint`) matches this
    recipe, backbone and these corpora's rows; a mismatch is one line naming the first differing key. With
    ``train`` false a missing variant is an error instead.
    """
    out, cfg, backbone_cfg = Path(out), training.recipe, training.backbone
    used = sorted({c for s in subsets for c in s})
    splits = build_splits(utterances, cfg.seed, corpora=used, labels=cfg.labels, split=cfg.split,
                          sentence_disjoint=cfg.sentence_disjoint) if used else {}
    missing = [variant_name(s) for s in subsets if not from_main((out / variant_name(s) / DONE).is_file())]
    if missing and not train:
        raise MetalearnError(f"pretune variants {missing} are not trained in {out}: train them first, once "
                             f"(python -m metalearn run --config ... --prepare; with pretune.train=true)")
    wanted = {variant_name(s): variant_fingerprint(s, cfg, backbone_cfg, utterances) for s in subsets}
    for name in [n for n in wanted if n not in missing]:  # every finished one checked before anything trains
        check_fingerprint(out / name, wanted[name])
        verify_variant(out / name)  # its checkpoints' sizes and SHA-256 against done.json: damage is not "done"
    status: dict[str, str] = {}
    for subset in subsets:
        name = variant_name(subset)
        folder = out / name
        if name not in missing:
            log.info("%s: already done (%s exists, made as this config says, checkpoints verified), skipping",
                     name, folder / DONE)
            status[name] = "skipped (done)"
        elif not subset:
            _write_none(folder, backbone_cfg)
            status[name] = "written"
        else:
            log.info("%s: training into %s", name, folder)
            config = _variant_config(subset, cfg, backbone_cfg, splits, wanted[name])  # its config.json
            train_variant(subset, splits, folder, training, config, functools.partial(write_done, folder, name))
            status[name] = "trained"
    return status


def ensure_variants(sources: Sequence[Utterance], subsets: Sequence[tuple[str, ...]], out: str | os.PathLike,
                    training: Training, train: bool = True) -> dict[str, Path]:
    """Variant name -> folder for every subset: the finished ones checked against this config (their
    fingerprint), the missing ones trained (``train``; else one line saying to train them first)."""
    run_variants(sources, subsets, out, training, train)
    return {variant_name(s): Path(out) / variant_name(s) for s in subsets}


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of the file's bytes, computed once per process per (path, inode, size, mtime)."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = sha256_file(path)
    return _HASHES[key]


def write_done(folder: Path, variant: str, checkpoints: Sequence[str]) -> None:
    """``done.json``, written last: the variant, when it finished, each checkpoint's SHA-256 and size."""
    _write_json(folder / DONE, {"variant": variant, "finished": time.time(),
                                "sha256": {name: file_sha256(folder / name) for name in checkpoints},
                                "bytes": {name: (folder / name).stat().st_size for name in checkpoints}})


def read_done(folder: str | os.PathLike) -> dict:
    """The variant's ``done.json``; one line when it is missing (not finished) or unreadable."""
    path = Path(folder) / DONE
    if not path.is_file():
        raise MetalearnError(f"pretune variant {folder} is not finished (no {DONE})")
    try:
        done = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MetalearnError(f"{path}: unreadable ({type(e).__name__}); {_retrain(folder)}") from None
    if not isinstance(done, dict):
        raise MetalearnError(f"{path}: expected a JSON object, got {type(done).__name__}; {_retrain(folder)}")
    return done


def _retrain(folder: str | os.PathLike) -> str:
    return f"delete {folder} to retrain the variant (a run retrains a variant folder that has no {DONE})"


def verify_checkpoint(folder: str | os.PathLike, name: str) -> Path:
    """``folder/name`` once it matches the size and SHA-256 its ``done.json`` records; one line when not.

    A ``done.json`` that records no hashes (a variant trained before they were recorded) is trusted, with
    one warning per folder and process.
    """
    folder = Path(folder)
    path, done = folder / name, read_done(folder)
    if not path.is_file():
        raise MetalearnError(f"{path}: missing from a finished variant; {_retrain(folder)}")
    hashes, sizes = done.get("sha256"), done.get("bytes") if isinstance(done.get("bytes"), dict) else {}
    if hashes is None:
        if str(folder) not in _WARNED:
            _WARNED.add(str(folder))
            log.warning("%s: its %s records no checkpoint hashes (trained before they were recorded), so its "
                        "files load unverified; %s to record them", folder, DONE, _retrain(folder))
        return path
    if not isinstance(hashes, dict) or name not in hashes:
        raise MetalearnError(f"{path}: {folder / DONE} records no SHA-256 for it; {_retrain(folder)}")
    size = path.stat().st_size
    if name in sizes and size != sizes[name]:
        raise MetalearnError(f"{path} is damaged: {size} bytes, {sizes[name]} when it was written "
                             f"({'truncated' if size < sizes[name] else 'grown'}); {_retrain(folder)}")
    actual = file_sha256(path)
    if actual != hashes[name]:
        raise MetalearnError(f"{path} is damaged: its SHA-256 {actual[:12]}... differs from "
                             f"{str(hashes[name])[:12]}... recorded in {DONE}; {_retrain(folder)}")
    return path


def verify_variant(folder: str | os.PathLike) -> None:
    """Check every checkpoint the variant's ``done.json`` records (see :func:`verify_checkpoint`)."""
    hashes = read_done(folder).get("sha256")
    for name in hashes if isinstance(hashes, dict) else ():
        verify_checkpoint(folder, name)


def load_checkpoint(folder: str | os.PathLike, name: str) -> dict[str, torch.Tensor]:
    """The tensors of the variant's checkpoint ``name``, verified first (:func:`verify_checkpoint`)."""
    path = verify_checkpoint(folder, name)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:  # unverifiable (an old done.json) and damaged
        raise MetalearnError(f"{path}: not a readable safetensors file ({e}); {_retrain(folder)}") from None


def load_variant(variant_dir: str | os.PathLike, backbone: SpeechBackbone) -> SpeechBackbone:
    """``backbone`` (freshly built from the variant's backbone config) holding the variant's weights.

    Strict: every key must match. The "none" variant returns ``backbone`` untouched. The weights file is
    verified against ``done.json`` first (:func:`verify_checkpoint`).
    """
    folder = Path(variant_dir)
    read_done(folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if config.get("weights") is None:
        return backbone
    state = load_checkpoint(folder, config["weights"])
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
