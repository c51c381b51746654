"""Transfer, Chen et al. (2019)'s Baseline: a speaker-independent emotion classifier, then fine-tuned per speaker.

The MLP head that MAML adapts (``hidden``) is trained supervised, by minibatch Adam, on the labelled clips of
the meta-training speakers: ``meta_train`` draws them from a sampler whose labels name the same classes in
every draw (:class:`LabelledClips`, which the runner builds because the class declares
``trains_on = "labels"``; meta-training tasks relabel their classes at random and would teach it nothing).
Its outputs are emotions, so it classifies a new speaker's queries with no support at all: that is its k = 0
point (``zero_point``: the runner also scores it on each smallest-k episode stripped of its support). At
every k it is fine-tuned on the support set by SGD (``test_steps``; with validation data the best of
0..test_steps by validation macro-F1), every layer or the last only (``adapt``). ``classifier="cosine"`` is
Baseline++ (scaled cosine between the body's features and the class weights).

An episode's classes are read from its names: N-way class i is emotion ``classes[i]``; a binary episode
(``not_t``, ``t``) scores ``t`` by its logit and ``not_t`` by the log-sum-exp of every other emotion's logit, so
one head serves both protocols. Shapes: E episodes, S support, Q query, D features, C emotions, W ways.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import grad

from metalearn.data.emotions import CANONICAL
from metalearn.fewshot.algorithms.base import AdapterBase, AdapterSpec, EpisodeBatch, TaskSampler
from metalearn.fewshot.algorithms.heads import (
    Params,
    body_forward,
    body_params,
    head_forward,
    init_head,
    last_keys,
    predict_episodes,
)
from metalearn.util.devices import resolve_device
from metalearn.util.errors import MetalearnError
from metalearn.util.ranges import Rule, check_fields

CLASSIFIERS = ("linear", "cosine")
ADAPT = ("all", "last")


@dataclass(frozen=True)
class TransferConfig:
    """Hyperparameters of the transfer baseline (training steps: the runner's meta-training steps).

    Attributes:
        hidden: hidden sizes of the MLP head (MAML's default: one layer of 256).
        lr, meta_batch, weight_decay: Adam on the meta-training speakers' clips, ``meta_batch`` clips a step.
        classifier: linear, or cosine (Baseline++) with logits ``cosine_scale`` x cosine similarity.
        adapt: which layers fine-tune on the support set: all, or the last (the classifier) only.
        test_lr, test_steps: SGD fine-tuning on the support (with validation data: the best of 0..test_steps).
        predict_chunk: episodes fine-tuned at once (bounds memory; results do not depend on it).
    """

    hidden: tuple[int, ...] = (256,)
    lr: float = 1e-3
    meta_batch: int = 64
    weight_decay: float = 0.0
    classifier: str = "linear"
    cosine_scale: float = 10.0
    adapt: str = "all"
    test_lr: float = 0.01
    test_steps: int = 20
    predict_chunk: int = 256

    RANGES: ClassVar[dict[str, Rule]] = {
        "hidden": ">= 1", "lr": "> 0", "meta_batch": ">= 1", "weight_decay": ">= 0", "classifier": CLASSIFIERS,
        "cosine_scale": "> 0", "adapt": ADAPT, "test_lr": "> 0", "test_steps": ">= 0", "predict_chunk": ">= 1"}

    def __post_init__(self) -> None:
        check_fields(self)


def search_space(trial: Any) -> dict:
    """The transfer baseline's tuning space (an Optuna trial -> TransferConfig fields); the head stays MAML's."""
    return {"lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
            "weight_decay": trial.suggest_categorical("weight_decay", [0.0, 1e-4, 1e-3]),
            "adapt": trial.suggest_categorical("adapt", list(ADAPT)),
            "test_lr": trial.suggest_float("test_lr", 1e-3, 1e-1, log=True),
            "test_steps": trial.suggest_categorical("test_steps", [5, 10, 20, 50])}


def class_logits(logits: Tensor, log_member: Tensor) -> Tensor:
    """Emotion logits [..., C] -> episode-class logits [..., W]: log-sum-exp over each class's emotions.

    ``log_member`` [W, C] is 0 where emotion c belongs to class w, else -inf (a class of one emotion gets its
    logit exactly).
    """
    return torch.logsumexp(logits.unsqueeze(-2) + log_member, dim=-1)


def membership(episode_classes: Sequence[str], emotions: Sequence[str]) -> Tensor:
    """[W, C] log-membership of the head's ``emotions`` in the episode's classes (see the module docstring)."""
    rows = []
    for name in episode_classes:
        target = name.removeprefix("not_")
        if target not in emotions:
            raise MetalearnError(f"transfer: episode class {name!r} is not among the emotions it was trained on "
                                 f"({', '.join(emotions)})")
        inside = [(e != target) if name.startswith("not_") else (e == target) for e in emotions]
        rows.append(torch.tensor([0.0 if i else -torch.inf for i in inside]))
    return torch.stack(rows)


@dataclass(frozen=True)
class SgdAdapt:
    """Test-time adaptation by plain SGD: ``steps`` steps of learning rate ``lr`` on the parameters ``keys``
    (None: every parameter) of the head ``forward(params, x [N, D]) -> logits [N, W]``."""

    forward: Callable[[Params, Tensor], Tensor]
    steps: int
    lr: float
    keys: Sequence[str] | None = None


def sgd_trajectory(params: Params, support_x: Tensor, support_y: Tensor, x: Tensor, adapt: SgdAdapt,
                   every: bool) -> Tensor:
    """One episode: logits of ``x [N, D]`` after 0..adapt.steps SGD steps on the support cross-entropy
    (``support_x [S, D]``, ``support_y [S]``), adapting ``adapt.keys`` (None: every parameter).

    Returns [steps + 1, N, W] (``every``) or the last [N, W]. Pure, so it runs under ``vmap``.
    """
    steps, lr, keys, forward = adapt.steps, adapt.lr, adapt.keys, adapt.forward
    fast = {k: v for k, v in params.items() if keys is None or k in keys}
    frozen = {k: v for k, v in params.items() if k not in fast}
    support_grad = grad(lambda p: F.cross_entropy(forward({**frozen, **p}, support_x), support_y))
    logits = [forward(params, x)] if every else []
    for _ in range(steps):
        g = support_grad(fast)
        fast = {k: v - lr * g[k] for k, v in fast.items()}
        if every:
            logits.append(forward({**frozen, **fast}, x))
    return torch.stack(logits) if every else forward({**frozen, **fast}, x)


class Transfer(AdapterBase):
    """A classifier trained on the meta-training speakers' labelled clips, fine-tuned on each support set."""

    name = "transfer"
    meta_learns = True                           # the runner trains it, on meta-training speakers only
    trains_on: ClassVar[str] = "labels"          # ... from their labelled clips (LabelledClips), not tasks
    zero_point: ClassVar[bool] = True            # also scored with no support, as the k = 0 point

    @classmethod
    def from_spec(cls, spec: AdapterSpec, cfg: object) -> Transfer:
        return cls(spec.dim, cfg, spec.seed, spec.device)

    def __init__(self, dim: int, cfg: TransferConfig | None = None, seed: int = 0,
                 device: str | torch.device = "cpu") -> None:
        self.dim, self.cfg, self.seed = dim, cfg or TransferConfig(), seed
        if self.cfg.classifier not in CLASSIFIERS or self.cfg.adapt not in ADAPT:
            raise MetalearnError(f"transfer: classifier {self.cfg.classifier!r} / adapt {self.cfg.adapt!r}: expected "
                                 f"one of {', '.join(CLASSIFIERS)} / {', '.join(ADAPT)}")
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.emotions: tuple[str, ...] = ()
        self.head: Params = {}
        self.losses: list[float] = []

    def forward(self, params: Params, x: Tensor) -> Tensor:
        """Emotion logits of ``x [..., D]``: [..., C] (linear last layer, or Baseline++'s scaled cosine)."""
        if self.cfg.classifier == "linear":
            return head_forward(params, x)
        w = params[last_keys(params)[0]]                                    # [C, H]
        h = body_forward(body_params(params), x)                            # [..., H]
        return self.cfg.cosine_scale * F.normalize(h, dim=-1) @ F.normalize(w, dim=-1).T

    def meta_train(self, sampler: TaskSampler, steps: int) -> None:
        """``steps`` Adam steps, each on the clips of ``sampler.sample(meta_batch)`` (support and query pooled).

        The sampler's labels must name the same classes in every draw (:class:`LabelledClips`); its
        ``classes`` (emotion names; default "0", "1", ...) are the head's outputs.
        """
        names = getattr(sampler, "classes", None) or tuple(str(i) for i in range(sampler.ways))
        self.emotions = tuple(names)
        params = init_head([self.dim, *self.cfg.hidden], len(self.emotions), self.seed, self.device)
        params = {k: v.requires_grad_() for k, v in params.items()}
        opt = torch.optim.Adam(params.values(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        for _ in range(steps):
            sx, sy, qx, qy = (t.to(self.device) for t in sampler.sample(self.cfg.meta_batch))
            x, y = torch.cat([sx.flatten(0, 1), qx.flatten(0, 1)]), torch.cat([sy.flatten(), qy.flatten()])
            loss = F.cross_entropy(self.forward(params, x[y >= 0].to(params["w0"].dtype)), y[y >= 0])
            opt.zero_grad()
            loss.backward()
            opt.step()
            self.losses.append(loss.item())
        self.head = {k: v.detach() for k, v in params.items()}

    def score(self, batch: EpisodeBatch) -> Tensor:
        """logits [E, Q, W]; episodes are grouped by their class names (binary episodes differ by target)."""
        out = None
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, e in enumerate(batch.episodes):
            groups.setdefault(tuple(e.classes), []).append(i)
        for classes, rows in groups.items():
            idx = torch.tensor(rows)
            val = (None, None) if batch.val_x is None else (batch.val_x[idx], batch.val_y[idx])
            logits = self.predict(batch.support_x[idx], batch.support_y[idx], batch.query_x[idx], batch.ways, *val,
                                  classes=classes)
            out = logits.new_zeros(len(batch.episodes), *logits.shape[1:]) if out is None else out
            out[idx] = logits
        return out

    def predict(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int,
                val_x: Tensor | None = None, val_y: Tensor | None = None,
                classes: Sequence[str] | None = None) -> Tensor:
        """support_x [E, S, D] (S may be 0: no adaptation), support_y [E, S], query_x [E, Q, D] -> [E, Q, W].

        ``classes``: the episodes' class names (default: the trained emotions themselves, when there are W).
        """
        if not self.head:
            raise MetalearnError("transfer: meta_train must run before predict")
        if classes is None and len(self.emotions) != ways:
            raise MetalearnError(f"transfer: trained on {len(self.emotions)} emotions; name the {ways} episode classes")
        log_member = membership(classes or self.emotions, self.emotions).to(self.device, query_x.dtype)

        def forward(p: Params, x: Tensor) -> Tensor:
            return class_logits(self.forward(p, x), log_member)

        qx = query_x.to(self.device)
        if support_x.shape[1] == 0:
            return forward(self.head, qx).to(query_x.device)
        keys = last_keys(self.head) if self.cfg.adapt == "last" else None
        adapt = SgdAdapt(forward, self.cfg.test_steps, self.cfg.test_lr, keys)

        def trajectory(sx: Tensor, sy: Tensor, x: Tensor, every: bool) -> Tensor:
            return sgd_trajectory(self.head, sx, sy, x, adapt, every)

        with torch.no_grad():
            logits = predict_episodes(trajectory, support_x.to(self.device), support_y.to(self.device), qx,
                                      None if val_x is None else val_x.to(self.device), val_y,
                                      self.cfg.predict_chunk)
        return logits.to(query_x.device)


class LabelledClips:
    """Random labelled clips of the meta-training speakers, as a sampler whose labels name fixed classes.

    ``sample(n)`` -> (support_x [n, 1, D], support_y [n, 1], query_x [n, 0, D], query_y [n, 0]): ``n`` clips
    drawn uniformly with replacement from ``x [N, D]``; label i means ``classes[i]`` (the emotions present, in
    canonical order) in every draw.
    """

    shots, queries = 1, 0

    def __init__(self, x: Tensor, labels: Sequence[str], seed: int) -> None:
        if x.shape[0] != len(labels) or not len(labels):
            raise MetalearnError(f"labelled clips: {x.shape[0]} rows for {len(labels)} labels (need >= 1)")
        present = set(labels)
        self.classes = tuple(e for e in CANONICAL if e in present) + tuple(sorted(present - set(CANONICAL)))
        if len(self.classes) < 2:
            raise MetalearnError(f"labelled clips hold {len(self.classes)} emotion(s) ({', '.join(self.classes)}), "
                                 f"need 2")
        self.ways = len(self.classes)
        index = {e: i for i, e in enumerate(self.classes)}
        self._x, self._y = x, torch.tensor([index[e] for e in labels], device=x.device)
        self._gen = torch.Generator().manual_seed(seed)

    def sample(self, n_episodes: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        rows = torch.randint(len(self._y), (n_episodes,), generator=self._gen).to(self._x.device)
        x, y = self._x[rows].unsqueeze(1), self._y[rows].unsqueeze(1)
        return x, y, x[:, :0], y[:, :0]
