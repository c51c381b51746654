"""GEmo-CLAP pre-finetuning as pretune variants: train one per loss, load its heads, project its features.

A CLAP variant folder ``{pretune.out}/clap-{loss}-{corpora}/`` holds what a supervised variant holds
(``config.json`` first, ``done.json`` last; see :mod:`metalearn.pretune.subsets`) plus
``clap_heads.safetensors`` (audio and text projections, logit scales). Its ``config.json`` has
``"kind": "clap"`` and the :class:`ClapConfig` it was trained with.

Two encoder modes:
- ``frozen``: the backbone is untouched (``"weights": null``, so the target corpus's embedding cache is
  shared with the "none" variant) and the heads train on the source corpora's cached pooled features
  (:func:`clap_heads.train_heads`), in seconds;
- ``finetune``: the backbone's top layers train with the heads from audio (:func:`clap_train.train_clap`,
  as GEmo-CLAP does) and the backbone is saved like a supervised variant's.

The variant's audio tower is the backbone followed by the audio projection: its features for the
few-shot algorithms are the L2-normalised CLAP audio embeddings [N, E] (:func:`clap_features`), the space
where zero-shot classification by class prompt happens. Train/dev/test of the sources are the same
per-corpus splits supervised pre-finetuning uses (:func:`metalearn.pretune.data.build_splits`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor

from metalearn.clap.config import ClapConfig, ClapStageConfig, with_loss
from metalearn.clap.heads import HeadsData, fit_heads
from metalearn.clap.model import ClapModel
from metalearn.clap.train import ClapParts, train_clap
from metalearn.data.manifest import Utterance, utterance_key
from metalearn.features.backbones import BackboneConfig, build_backbone
from metalearn.features.embeddings import EmbeddingConfig, extract
from metalearn.features.featurize import select_features
from metalearn.pretune.data import build_splits
from metalearn.pretune.subsets import load_checkpoint, write_done
from metalearn.pretune.train import jsonable
from metalearn.pretune.variant import PretuneVariant
from metalearn.util.devices import resolve_device
from metalearn.util.errors import MetalearnError
from metalearn.util.fileio import atomic_path, write_json

log = logging.getLogger(__name__)
HEADS = "clap_heads.safetensors"
WEIGHTS = "backbone.safetensors"


def clap_variant_name(loss: str, corpora: Sequence[str]) -> str:
    """``clap-{loss}-{corpora sorted, "+"-joined}``, e.g. ``clap-sl-iemocap+msp_podcast``."""
    return f"clap-{loss}-{'+'.join(sorted(corpora))}"


def _save(state: dict[str, Tensor], path: Path) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}, str(tmp))


def train_clap_variant(loss: str, corpora: Sequence[str], sources: Sequence[Utterance], folder: Path,
                       cfg: ClapStageConfig, backbone_cfg: BackboneConfig, embeddings: EmbeddingConfig) -> dict:
    """Train one CLAP variant on ``corpora``'s utterances of ``sources`` into ``folder``; its summary."""
    start = time.perf_counter()
    rows = [u for u in sources if u.corpus in set(corpora) and u.emotion not in set(cfg.exclude)]
    splits = build_splits(rows, cfg.seed, corpora=sorted(corpora))
    train, dev, test = ([u for s in splits.values() for u in s.part(p)] for p in ("train", "dev", "test"))
    classes = sorted({u.emotion for u in train})
    dev, test = ([u for u in part if u.emotion in classes] for part in (dev, test))
    if not dev:
        raise MetalearnError(f"CLAP variant {folder.name}: no dev utterances to select the heads with")
    model_cfg = with_loss(cfg.model, cfg.alphas, loss)
    backbone = build_backbone(backbone_cfg)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "config.json", jsonable({
        "variant": folder.name, "kind": "clap", "subset": sorted(corpora), "corpora": sorted(corpora),
        "weights": WEIGHTS if cfg.encoder == "finetune" else None, "backbone": dataclasses.asdict(backbone_cfg),
        "audio_dim": backbone.hidden_size, "clap": dataclasses.asdict(model_cfg), "stage": dataclasses.asdict(cfg),
        "classes": classes, "split_sizes": {"train": len(train), "dev": len(dev), "test": len(test)}}), indent=2)
    if cfg.encoder == "frozen":
        model, result = _train_frozen(backbone, model_cfg, cfg, ClapParts(train, dev, test), classes, embeddings)
    else:
        torch.manual_seed(cfg.train.seed)
        model = ClapModel(backbone, model_cfg)
        fit = train_clap(model, ClapParts(train, dev, test), classes, cfg.train, resolve_device(cfg.device),
                         curve_path=folder / "curve.jsonl")
        result = {"best_epoch": fit.best_epoch, "epochs": fit.epochs, "dev": fit.dev, "test": fit.test}
        _save(backbone.state_dict(), folder / WEIGHTS)
    _save(model.heads_state_dict(), folder / HEADS)
    summary = {"variant": folder.name, "loss": loss, "encoder": cfg.encoder, "classes": classes, **result,
               "seconds": round(time.perf_counter() - start, 2)}
    write_json(folder / "summary.json", jsonable(summary), indent=2)
    write_done(folder, folder.name, [HEADS, *([WEIGHTS] if cfg.encoder == "finetune" else [])])
    log.info("%s: zero-shot dev UA %.3f, test WA %.3f UA %.3f (%s classes), %.0f s", folder.name,
             result["dev"]["ua"], result["test"]["wa"], result["test"]["ua"], len(classes), summary["seconds"])
    return summary


def _train_frozen(backbone, model_cfg: ClapConfig, cfg: ClapStageConfig, split: ClapParts, classes: list[str],
                  embeddings: EmbeddingConfig) -> tuple[ClapModel, dict]:
    """Heads on the untouched backbone's cached pooled features (hidden state ``model_cfg.layer``)."""
    emb = extract([*split.train, *split.dev, *split.test], backbone, embeddings)
    x = select_features(emb.values, model_cfg.layer)
    index = {utterance_key(u): i for i, u in enumerate(emb.rows)}
    parts = {}
    for name, part in (("train", split.train), ("dev", split.dev), ("test", split.test)):
        kept = [u for u in part if utterance_key(u) in index]  # an unreadable file has no embedding
        parts[name] = (kept, x[[index[utterance_key(u)] for u in kept]])
    (tr_rows, tr_x), (dv_rows, dv_x), (te_rows, te_x) = parts["train"], parts["dev"], parts["test"]
    y = {n: torch.tensor([classes.index(u.emotion) for u in parts[n][0]], dtype=torch.long) for n in parts}
    data = HeadsData(tr_x, [u.emotion for u in tr_rows], [u.gender for u in tr_rows], dv_x, y["dev"], te_x, y["test"])
    model, step, dev_scores, test_scores = fit_heads(data, classes, model_cfg, cfg.heads)
    return model, {"best_step": step, "dev": {**dev_scores, "n": len(dv_rows)},
                   "test": {**test_scores, "n": len(te_rows)}}


def load_clap_heads(folder: str | os.PathLike) -> ClapModel:
    """The variant's CLAP heads (text tower included) over its backbone's pooled features, eval mode.

    The heads file is verified against the SHA-256 its ``done.json`` records (one line when damaged)."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if config.get("kind") != "clap":
        raise MetalearnError(f"pretune variant {folder} is not a CLAP variant (its config.json has no kind: clap)")
    model = ClapModel(int(config["audio_dim"]), ClapConfig(**config["clap"]))
    model.load_heads(load_checkpoint(folder, HEADS))
    return model.eval()


def clap_layer(folder: str | os.PathLike) -> int:
    """The hidden state a CLAP variant pools (its ``ClapConfig.layer``)."""
    config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    return int(config["clap"]["layer"])


@torch.no_grad()
def clap_features(model: ClapModel, pooled: Tensor) -> Tensor:
    """Pooled features [N, D] -> the CLAP audio embeddings [N, E] (L2-normalised, float32)."""
    return torch.cat([model.project_audio(pooled[i:i + 4096]) for i in range(0, len(pooled), 4096)]).float()


@torch.no_grad()
def prompt_head(model: ClapModel, classes: Sequence[str]) -> dict[str, Tensor]:
    """The zero-shot classifier as a linear head over CLAP embeddings: weight [E, W], bias [W].

    ``features @ weight + bias`` equals :meth:`ClapModel.zero_shot_logits` for the classes' prompts.
    """
    from metalearn.clap.loss import logit_scale

    weight = logit_scale(model.loss.log_scale_audio) * model.class_embeddings(list(classes)).T
    return {"weight": weight.float(), "bias": torch.zeros(len(classes))}


class ClapVariant(PretuneVariant):
    """A CLAP pretune variant: its features are the audio tower's embeddings [N, E], and it has a prompt prior."""

    has_prior = True

    @cached_property
    def heads(self) -> ClapModel:
        return load_clap_heads(self.folder)

    def features(self, values: np.ndarray, layer: int | str) -> Tensor:
        """Cached embeddings [N, L + 1, D] -> its pooled layer through the audio projection [N, E] (``layer``
        is the run's choice for other variants; a CLAP variant pools the layer it was trained on)."""
        return clap_features(self.heads, select_features(values, clap_layer(self.folder)))

    def feature_name(self, layer: int | str, states: int) -> str:
        """Its own audio embedding, whatever the run's ``layer``."""
        return "clap"

    def prompt_prior(self, classes: Sequence[str]) -> dict[str, Tensor]:
        """The zero-shot head over :meth:`features`: weight [E, W], bias [W]."""
        return prompt_head(self.heads, classes)
