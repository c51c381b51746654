"""Train one supervised pretune variant into its folder, beside its frozen-probe ceiling, and record both.

The frozen probe: multinomial logistic regression with an L2 penalty on the weights, fitted full-batch by L-BFGS
in float64 on features standardized with the train split's mean and std: deterministic (no sampling, no
dropout); pure functions over tensors (:func:`fit_probe`, :func:`probe_scores`).

Order of work: build the backbone, freeze all but the layers ending at the head's state, keep the frozen
layers' output per clip (:meth:`MultiHeadClassifier.cache_trunk`), pool the UNTOUCHED states the head reads for
every train/dev/test clip (this also fills the cache), train (:func:`metalearn.pretune.train.train`), fit the
probe (below) on those untouched features (a mix: under the learned weights), then save
the backbone, the heads (with the fixed z-score of the pooled states they read and a mix's logits and softmax
weights, keys ``feature.*``), ``summary.json``, ``record.json`` (:mod:`metalearn.pretune.records`) and,
last, ``done.json``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor

from metalearn.features.backbones import BackboneConfig, SpeechBackbone, build_backbone
from metalearn.pretune.config import PretuneConfig
from metalearn.pretune.data import CorpusSplits
from metalearn.pretune.distributed import barrier, is_main
from metalearn.pretune.model import MultiHeadClassifier, freeze_for_head, frozen_depth
from metalearn.pretune.records import build_record, write_record
from metalearn.pretune.train import TrainResult, jsonable, pooled_part, train
from metalearn.util.fileio import atomic_path, write_json

log = logging.getLogger(__name__)
WEIGHTS = "backbone.safetensors"
HEADS = "heads.safetensors"


def head_layer(model: MultiHeadClassifier) -> int | str:
    """What a variant records as its feature: the state index, or "mix"."""
    return "mix" if model.mix is not None else model.top


def probe(model: MultiHeadClassifier, features: Mapping[str, Mapping[str, tuple[torch.Tensor, torch.Tensor]]],
          splits: Mapping[str, CorpusSplits], cfg: PretuneConfig) -> dict[str, ProbeScore]:  # noqa: F821
    """corpus -> the frozen probe's score on the untouched ``features[part][corpus]`` (states [N, S, D], labels)
    at the head's state, or under the model's learned mix weights (each state z-scored by the model's fixed
    norm first, as the heads read them)."""
    weights = model.mix_weights()
    weights = None if weights is None else weights.detach().cpu().double()
    shift, scale = model.shift.detach().cpu().double(), model.scale.detach().cpu().double()
    scores = {}
    for corpus, s in sorted(splits.items()):
        parts = [(mix_states((features[p][corpus][0].double() - shift) / scale, weights), features[p][corpus][1])
                 for p in ("train", "dev", "test")]
        scores[corpus] = probe_scores(parts[0], parts[1], parts[2], len(s.labels), cfg.probe_l2)
        log.info("%s: frozen probe (l2 %g) dev %.4f, test %.4f", corpus, scores[corpus].l2, scores[corpus].dev,
                 scores[corpus].test)
    return scores


def train_norm(train: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std [S, D] of the pooled states [N, S, D] of every corpus's train clips; each std floored at 1 %
    of its state's mean std, so that a dimension the untouched backbone barely moves cannot blow up once the
    trained layers move it."""
    x = torch.cat([states for states, _ in train.values()]).double()
    std = x.std(0, unbiased=False)
    return x.mean(0).float(), torch.maximum(std, 0.01 * std.mean(-1, keepdim=True)).clamp_min(1e-8).float()


def _save_state(tensors: Mapping[str, torch.Tensor], path: Path) -> None:
    """``tensors`` as safetensors (CPU copies, so shared storage is never an issue); atomic."""
    with atomic_path(path) as tmp:
        save_file({k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}, str(tmp))


def feature_state(model: MultiHeadClassifier) -> dict[str, torch.Tensor]:
    """What the heads read, beside them in heads.safetensors (keys prefixed ``feature.``): the fixed z-score
    ``shift``, ``scale`` [S, D] and, for a mix, ``mix_logits`` and ``mix_weights`` (softmax) [L + 1]."""
    state = {"shift": model.shift, "scale": model.scale}
    if model.mix is not None:
        state.update(mix_logits=model.mix, mix_weights=model.mix_weights())
    return state


def build_model(subset: tuple[str, ...], splits: Mapping[str, CorpusSplits], cfg: PretuneConfig,
                backbone: SpeechBackbone) -> MultiHeadClassifier:
    """The classifier over ``backbone`` (frozen but the layers ending at the head's state), its trunk cached."""
    model = MultiHeadClassifier(backbone, {c: splits[c].labels for c in subset}, cfg.layer)
    trainable = freeze_for_head(backbone, cfg.trainable_layers, model.top)
    depth = frozen_depth(cfg.trainable_layers, model.top)
    cached = (cfg.cache_trunk and depth is not None
              and model.cache_trunk(depth, cfg.trunk_cache_mb * 2**20, cfg.pack_clips))
    log.info("%s: %s, head on %s, %d trainable backbone parameters, frozen trunk %s", "+".join(subset),
             backbone.name, head_layer(model), trainable, f"of {depth} layers cached" if cached else "not cached")
    return model


def _write_json(path: Path, obj: object) -> None:
    write_json(path, jsonable(obj), indent=2)


@dataclasses.dataclass(frozen=True)
class Training:
    """How the variants of one call are made: the recipe, the backbone's config, the device, and the function that
    builds a fresh backbone from its config (tests pass a small one)."""

    recipe: PretuneConfig
    backbone: BackboneConfig
    device: torch.device
    build: Callable[[BackboneConfig], SpeechBackbone] = build_backbone


def train_variant(subset: tuple[str, ...], splits: dict[str, CorpusSplits], folder: Path, training: Training,
                  config: dict, finish: Callable[[Sequence[str]], None]) -> TrainResult:
    """Build a fresh backbone (seeded), pre-finetune it on ``subset`` and save the variant into ``folder``
    (``config``: its config.json, written first, with the ``head_layer`` the model resolves; ``finish(files)``
    writes done.json over the checkpoints, last, on rank 0)."""
    cfg, device = training.recipe, training.device
    start = time.perf_counter()
    backbone = training.build(training.backbone)
    # Seeded AFTER the build: a build may draw from torch's global RNG or not (the default Whisper's first use
    # imports it, initialising a model at random; later builds load the import and draw nothing), and the
    # heads' initialisation must not depend on which happened (the cross-clone difference of pft-iemocap).
    torch.manual_seed(cfg.seed)
    model = build_model(subset, splits, cfg, backbone)
    if is_main():
        folder.mkdir(parents=True, exist_ok=True)
        _write_json(folder / "config.json", {**config, "head_layer": head_layer(model)})
    used = {c: splits[c] for c in subset}
    model.to(device)
    untouched = {p: pooled_part(model, used, p, cfg, device) for p in ("train", "dev", "test")}
    if cfg.standardize:
        model.set_norm(*train_norm(untouched["train"]))
    result = train(model, used, cfg, device, curve_path=folder / "curve.jsonl")
    scores = probe(model, untouched, used, cfg)
    if is_main():
        _save_state(backbone.state_dict(), folder / WEIGHTS)
        heads = {f"{k}": v for k, v in model.heads.state_dict().items()}
        heads.update({f"feature.{k}": v for k, v in feature_state(model).items()})
        _save_state(heads, folder / HEADS)
        files = [WEIGHTS, HEADS]
        _write_json(folder / "summary.json", {"variant": config["variant"], **dataclasses.asdict(result)})
        probes = {c: {"dev": p.dev, "test": p.test, "l2": p.l2} for c, p in scores.items()}
        write_record(folder, build_record(config["variant"], head_layer(model), cfg, used, result, probes,
                                          time.perf_counter() - start))
        finish(files)
    barrier()
    return result


@dataclasses.dataclass(frozen=True)
class Probe:
    """A fitted probe: logits = ((x - shift) / scale) @ weight + bias; weight [D, C], bias [C], shift/scale [D]."""

    weight: Tensor
    bias: Tensor
    shift: Tensor
    scale: Tensor

    def logits(self, x: Tensor) -> Tensor:
        """``x`` [N, D] -> logits [N, C] (float64)."""
        return ((x.double() - self.shift) / self.scale) @ self.weight + self.bias

    def accuracy(self, x: Tensor, y: Tensor) -> float:
        """Share of rows of ``x`` [N, D] whose argmax is ``y`` [N]; NaN for no rows."""
        if len(y) == 0:
            return math.nan
        return float((self.logits(x).argmax(-1) == y).double().mean())


def probe_loss(weight: Tensor, bias: Tensor, z: Tensor, y: Tensor, l2: float) -> Tensor:
    """Mean cross-entropy of logits ``z @ weight + bias`` (z [N, D], y [N]) + ``l2 / 2 * ||weight||^2``."""
    ce = torch.nn.functional.cross_entropy(z @ weight + bias, y)
    return ce + 0.5 * l2 * (weight * weight).sum()


def fit_probe(x: Tensor, y: Tensor, n_classes: int, l2: float, max_iter: int = 500, tol: float = 1e-9) -> Probe:
    """The probe minimising :func:`probe_loss` on ``x`` [N, D] standardized by its own mean and std (floored
    at 1e-8), labels ``y`` [N] in 0..n_classes-1; weights start at zero (a unique optimum for l2 > 0)."""
    x = x.double()
    shift, scale = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-8)
    z = (x - shift) / scale
    weight = torch.zeros(x.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, tolerance_grad=tol, tolerance_change=tol,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = probe_loss(weight, bias, z, y, l2)
        loss.backward()
        return loss

    opt.step(closure)
    return Probe(weight.detach(), bias.detach(), shift, scale)


@dataclasses.dataclass(frozen=True)
class ProbeScore:
    """The probe chosen on dev: its L2 strength and its dev and test accuracy."""

    l2: float
    dev: float
    test: float


def probe_scores(train: tuple[Tensor, Tensor], dev: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor],
                 n_classes: int, l2s: Sequence[float]) -> ProbeScore:
    """Fit one probe per L2 strength on ``train`` (features [N, D], labels [N]), keep the best on ``dev`` (the
    first in ``l2s`` on ties; the first when dev is empty), score it on dev and test."""
    best: ProbeScore | None = None
    for l2 in l2s:
        probe = fit_probe(*train, n_classes, float(l2))
        score = ProbeScore(float(l2), probe.accuracy(*dev), probe.accuracy(*test))
        if best is None or (not math.isnan(score.dev) and (math.isnan(best.dev) or score.dev > best.dev)):
            best = score
    assert best is not None, "probe_scores needs at least one L2 strength"
    return best


def mix_states(states: Tensor, weights: Tensor | None) -> Tensor:
    """Features [N, D] of pooled states [N, S, D]: the one state (S = 1), or the states under mix ``weights`` [S]."""
    if weights is None:
        if states.shape[1] != 1:
            raise ValueError(f"{states.shape[1]} states but no mix weights")
        return states[:, 0]
    return torch.einsum("s,nsd->nd", weights.to(states.dtype), states)
