"""``full_finetune`` of many episodes in one pass: their trainable layers and heads stacked along an episode dim.

The episodes of a pass share the backbone's frozen trunk (state h - n of every clip, cached once) and differ only
in the weights of the ``n`` layers ending at the feature's state and of the head. Those weights are stacked
([E, ...], every episode starting from the pretune variant's), and one forward runs every episode's clips through
its own weights by batched matmuls (:func:`whisper_layer`, Whisper's encoder layer written out on stacked weights),
so one backward gives every episode's gradients (the episodes' losses are summed; no weight is shared).

Clips are *packed* (:mod:`metalearn.features.backbones.whisper_packed`): each episode's clips end to end along one
frame axis ([E, T, D]), attention per clip, pooling one batched product.

Training is ``finetune.train_selected``'s, per episode: full-batch Adam (``batched_adam_step``, torch.optim.Adam's
update, two settings: the head at ``lr``, the layers at ``backbone_lr``, both with ``weight_decay`` as L2), the
layers stepping only for the first ``backbone_steps`` steps (then the head trains alone on the adapted
layers' features, computed once), validation macro-F1 every ``eval_every`` steps and after the last (ties: the
earliest; NaN never wins), the selected checkpoint's query logits computed when it is reached (for the episodes
that improved only). Predictions equal the per-trial path's up to float rounding
(tests/test_full_finetune_batched.py).

:func:`supports` says when a backbone can run here (Whisper with a cacheable trunk); otherwise ``FullFinetune``
runs its per-trial path. ``FullFinetune.run_episodes`` builds a pass's inputs (:func:`clip_states`,
:func:`pass_inputs`) and runs :func:`train_batched`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from metalearn.features.backbones.whisper_packed import (
    Packed,
    layer_norm,
    pack,
    packs,
    pooling_dtype,
    whisper_layer,
)
from metalearn.features.shared_trunk import TrunkCache, caches_trunk
from metalearn.fewshot.algorithms.finetune_config import is_checkpoint
from metalearn.fewshot.algorithms.functional import (
    AdamSettings,
    Params,
    adam_init,
    batched_adam_step,
    cross_entropy,
)
from metalearn.fewshot.algorithms.heads import head_forward
from metalearn.fewshot.episodes import Episode
from metalearn.util.metrics import macro_f1


def supports(backbone: nn.Module, layers: Sequence[nn.Module], after: Sequence[nn.Module]) -> bool:
    """Whether the batched pass can train ``layers`` (and ``after``, applied on the last state) of ``backbone``."""
    return (caches_trunk(backbone) and packs(layers)
            and all(isinstance(m, nn.LayerNorm) or not list(m.parameters()) for m in after))


def clip_states(backbone: nn.Module, cache: TrunkCache | None, depth: int, waves: dict[str, Tensor], chunk: int,
                autocast: Callable[[], object]) -> dict[str, tuple[Tensor, int]]:
    """Each clip's trunk output (state ``depth`` = h - n) [L, D] and its frames (the rows pooled: the first ones),
    ``chunk`` clips per forward, from ``cache`` (None: a cache for this call only)."""
    cache = cache if cache is not None else TrunkCache(backbone, depth, 2**62)
    keys, out = list(waves), {}
    trimmed = getattr(backbone, "mode", "trimmed") == "trimmed"
    with torch.no_grad(), autocast():
        for i in range(0, len(keys), chunk):
            part = keys[i : i + chunk]
            trunk = cache.batch(part, [waves[k] for k in part])
            x = trunk.states[-1]
            for j, key in enumerate(part):
                frames = int(trunk.frames[j])
                out[key] = (x[j, :frames] if trimmed else x[j], frames)
    return out


@dataclass
class Stack:
    """The trainable modules and their per-episode weights: ``layers`` (run in order, their weights
    ``params["{i}.{name}"]``) and ``after`` (applied to the last state: LayerNorm trains as ``"after{j}.{name}"``
    when ``trainable``, else runs as it is)."""

    layers: Sequence[nn.Module]
    after: Sequence[nn.Module]
    trainable: bool

    def initial(self, episodes: int) -> Params:
        """Every episode's weights: the modules' current values, stacked [E, ...] (leaves with gradients)."""
        named = [(f"{i}.", m) for i, m in enumerate(self.layers)]
        named += [(f"after{j}.", m) for j, m in enumerate(self.after)] if self.trainable else []
        return {prefix + k: v.detach().expand(episodes, *v.shape).clone().requires_grad_(True)
                for prefix, m in named for k, v in m.named_parameters()}

    def forward(self, params: Params, packed: Packed) -> Tensor:
        """Pooled state h of every clip [E, N, D] (padded clips: zeros)."""
        x = packed.x
        for i, layer in enumerate(self.layers):
            x = whisper_layer(layer, {k[len(f"{i}."):]: v for k, v in params.items() if k.startswith(f"{i}.")},
                              packed, x)
        for j, module in enumerate(self.after):
            if self.trainable and isinstance(module, nn.LayerNorm):
                x = layer_norm(x, params, f"after{j}", module.eps)
            else:
                x = module(x)
        return torch.bmm(packed.pool, pooling_dtype(x))


@dataclass(frozen=True)
class PassInputs:
    """One pass's episodes: packed support, validation and query clips; labels (-1: padding): support_y [E, S],
    val_y [E, V] (None: no episode has validation); ``features``: pooled [E, N, D] -> the run's feature (the fold's
    z-score); ``initial_heads``: (mean [E, 1, D], scale [E, 1, D]) -> heads {name: [E, ...]} (every episode's the
    per-trial path's first); ``standardizer``: (support features [E, S, D], support_y) -> (mean, scale)."""

    support: Packed
    support_y: Tensor
    query: Packed
    val: Packed | None
    val_y: Tensor | None
    features: Callable[[Tensor], Tensor]
    initial_heads: Callable[[Tensor, Tensor], Params]
    standardizer: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


def pass_inputs(episodes: Sequence[Episode], clips: dict[str, tuple[Tensor, int]], device: torch.device,
                features: Callable[[Tensor], Tensor], initial_heads: Callable[[Tensor, Tensor], Params],
                standardizer: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]) -> PassInputs:
    """The :class:`PassInputs` of ``episodes`` (one shape), their clips' :func:`clip_states` ``clips``."""

    def packed(name: str) -> Packed:
        return pack([[clips[k] for k in getattr(ep, name)] for ep in episodes])

    def labels(name: str) -> Tensor:
        rows = [getattr(ep, f"{name}_labels") for ep in episodes]
        y = torch.full((len(rows), max(max(len(r) for r in rows), 1)), -1, dtype=torch.long)
        for i, r in enumerate(rows):
            y[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        return y.to(device)

    has_val = any(ep.validation for ep in episodes)
    return PassInputs(packed("support"), labels("support"), packed("query"),
                      packed("validation") if has_val else None, labels("validation") if has_val else None,
                      features, initial_heads, standardizer)


def _head(params: Params, x: Tensor) -> Tensor:
    """Episode-stacked heads on x [E, N, D]: linear ({weight [E, D, W], bias [E, W]}) or the MLP's head_forward."""
    if "weight" in params:
        return torch.baddbmm(params["bias"][:, None], x, params["weight"])
    return torch.func.vmap(head_forward)(params, x)


def train_batched(stack: Stack, inputs: PassInputs, ways: int, cfg, autocast: Callable[[], object]
                  ) -> tuple[Tensor, Tensor]:
    """``train_selected`` for E episodes at once: query logits [E, Q, W] of each one's selected (else final)
    checkpoint and its step [E]. ``cfg``: a FullFinetuneConfig; ``autocast``: the precision context."""
    e_count = inputs.support_y.shape[0]
    layers = stack.initial(e_count)
    limit = (cfg.steps if cfg.backbone_steps is None else cfg.backbone_steps) if layers else 0

    def feats(packed: Packed, params: Params) -> Tensor:
        with autocast():
            pooled = stack.forward(params, packed)
        return inputs.features(pooled)

    with torch.no_grad():
        start = feats(inputs.support, layers)
    mean, scale = inputs.standardizer(start, inputs.support_y)
    head = {k: v.clone().requires_grad_(True) for k, v in inputs.initial_heads(mean, scale).items()}
    settings = [AdamSettings(lr, (cfg.beta1, cfg.beta2), cfg.eps, cfg.weight_decay) for lr in (cfg.lr, cfg.backbone_lr)]
    states = [adam_init(head), adam_init(layers)]
    frozen: dict[str, Tensor] = {}

    def logits(name: str, params: Params, head: Params, index: Tensor | None = None) -> Tensor:
        packed = getattr(inputs, name)
        if step_now[0] > limit:  # the layers are done adapting: their features, once
            if name not in frozen:
                with torch.no_grad():
                    frozen[name] = start if name == "support" and limit == 0 else feats(packed, params)
            x = frozen[name]
        else:
            x = feats(packed if index is None else packed.subset(index),
                      params if index is None else {k: v[index] for k, v in params.items()})
        if index is not None and step_now[0] > limit:
            x = x[index]
        m, s = (mean, scale) if index is None else (mean[index], scale[index])
        return _head(head if index is None else {k: v[index] for k, v in head.items()}, (x - m) / s)

    step_now = [0]
    val = inputs.val is not None and inputs.val_y is not None
    best_f1 = torch.full((e_count,), -math.inf, dtype=torch.float64)
    best_step = torch.zeros(e_count, dtype=torch.long)
    best: Tensor | None = None
    for step in range(1, cfg.steps + 1):
        step_now[0] = step
        adapting = step <= limit
        trained = {**head, **(layers if adapting else {})}
        loss = cross_entropy(logits("support", layers, head), inputs.support_y).sum()
        grads = dict(zip(trained, torch.autograd.grad(loss, list(trained.values())), strict=True))
        batched_adam_step(head, {k: grads[k] for k in head}, states[0], settings[0], step)
        if adapting:
            batched_adam_step(layers, {k: grads[k] for k in layers}, states[1], settings[1], step)
        if val and is_checkpoint(step, cfg):
            with torch.no_grad():
                pred = logits("val", layers, head).argmax(-1)
                f1 = macro_f1(pred, inputs.val_y, None, ways).cpu().double().nan_to_num(nan=-math.inf)
                better = f1 > best_f1
                if bool(better.any()):
                    index = better.nonzero().flatten()
                    chosen = logits("query", layers, head, index.to(inputs.support_y.device))
                    if best is None:
                        best = chosen.new_zeros(e_count, *chosen.shape[1:])
                    best[index.to(best.device)] = chosen
                    best_step[better], best_f1[better] = step, f1[better]
    with torch.no_grad():
        final = logits("query", layers, head)
    unselected = best_step == 0
    if best is not None:
        final = torch.where(unselected.to(final.device)[:, None, None], final, best)
    return final, torch.where(unselected, cfg.steps, best_step)
