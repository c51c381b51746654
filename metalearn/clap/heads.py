"""CLAP heads on a frozen encoder: train the projections and logit scales on cached pooled features.

With the audio encoder frozen, its mean-pooled hidden state is a fixed vector per utterance (the
embedding cache holds it), so only the audio projection, the text projection and the two logit scales
learn, and each class prompt goes through the (frozen) text encoder once. Minibatches are drawn at
random (seeded); every ``eval_every`` steps the dev items are classified zero-shot and the step with
the best dev UA (mean per-class recall) is kept.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from metalearn.clap.config import ClapHeadsConfig  # noqa: F401 - re-exported
from metalearn.clap.model import ClapConfig, ClapModel
from metalearn.clap.train import wa_ua
from metalearn.util.errors import MetalearnError


@dataclasses.dataclass(frozen=True)
class HeadsData:
    """The pooled features one heads fit reads; ``*_y`` are indices into the fit's classes.

    ``x`` [N, D] trains, with each row's ``emotions`` and ``genders`` (N each: the losses' labels); ``dev_x``
    [V, D] and ``dev_y`` [V] pick the step; ``test_x`` [T, D] and ``test_y`` [T] are scored (T may be 0).
    """

    x: Tensor
    emotions: Sequence[str]
    genders: Sequence[str]
    dev_x: Tensor
    dev_y: Tensor
    test_x: Tensor
    test_y: Tensor


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the block on one intra-op thread: the heads' small matrix products only lose to thread hand-offs.

    Measured on 2 shared CPU cores (another process busy on them): a gemo_demo fold took 93 s with torch's
    2 threads and 1.1 s with one, with identical results.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def dev_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(dev, train) index arrays: a seeded ``fraction`` of ``range(n)`` (at least 1) and the rest."""
    order = np.random.default_rng(seed).permutation(n)
    n_dev = min(n - 1, max(1, int(round(fraction * n))))
    return np.sort(order[:n_dev]), np.sort(order[n_dev:])


def scores(logits: Tensor, y: Tensor, ways: int) -> dict[str, float]:
    """WA and UA of ``logits`` [N, W] against ``y`` [N]."""
    return wa_ua(logits.argmax(-1), y, ways)


def train_heads(model: ClapModel, data: HeadsData, classes: Sequence[str], cfg: ClapHeadsConfig
                ) -> tuple[int, dict[str, float]]:
    """Train the heads on pooled features ``data.x`` [N, D]; keep the step with the best dev zero-shot UA.

    ``data.dev_x`` [V, D] and ``data.dev_y`` [V] (indices into ``classes``) select the step; the test part is not
    read. The text encoder stays frozen (``ClapConfig.train_text`` must be False), so only projections and scales
    learn. Returns (the kept step, its dev {"wa", "ua"}); ``model`` ends holding that step's heads.
    """
    x, emotions, genders, dev_x, dev_y = data.x, data.emotions, data.genders, data.dev_x, data.dev_y
    if model.cfg.train_text:
        raise MetalearnError("training CLAP heads on cached features needs a frozen text encoder (train_text=false)")
    if len(x) < 2:
        raise MetalearnError(f"{len(x)} training utterances: a contrastive batch needs at least 2")
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    params = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith(("backbone.", "text."))]
    opt = torch.optim.AdamW(params, lr=cfg.lr)
    labels = sorted(set(emotions))
    ids = torch.tensor([labels.index(e) for e in emotions])
    with torch.no_grad():  # the text encoder is frozen: each class prompt is encoded once
        sentences = model.text(model.prompts(labels))  # [C, H]
    best: tuple[float, int, dict, dict] = (-1.0, 0, {}, {})
    for step in range(1, cfg.steps + 1):
        idx = rng.choice(len(x), min(cfg.batch_size, len(x)), replace=False)
        batch_ids = torch.unique(ids[idx], return_inverse=True)[1]
        text = F.normalize(model.text_projection(sentences[ids[idx]]), dim=-1)
        out = model.loss(model.project_audio(x[idx]), text, batch_ids, [genders[i] for i in idx])
        out["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            with torch.no_grad():
                dev = scores(model.zero_shot_logits(dev_x, list(classes)), dev_y, len(classes))
            if dev["ua"] > best[0]:
                state = {k: v.detach().clone() for k, v in model.heads_state_dict().items()}
                best = (dev["ua"], step, dev, state)
    model.load_heads(best[3])
    return best[1], best[2]


def fit_heads(data: HeadsData, classes: Sequence[str], model_cfg: ClapConfig, cfg: ClapHeadsConfig
              ) -> tuple[ClapModel, int, dict[str, float], dict[str, float]]:
    """Fresh CLAP heads (initialised from ``cfg.seed``) over pooled features, trained and scored, on one thread.

    Trains on ``data.x`` [N, D] with :func:`train_heads` (``data.dev_x`` [V, D], ``data.dev_y`` [V] pick the
    step), then classifies ``data.test_x`` [T, D] zero-shot against ``data.test_y`` [T] (WA and UA are NaN when
    T = 0). Returns (model holding the kept step's heads, that step, dev {"wa", "ua"}, test {"wa", "ua"}).
    """
    classes = list(classes)
    test_x, test_y = data.test_x, data.test_y
    with one_thread():  # small matrix products: thread hand-offs cost more than they bring
        torch.manual_seed(cfg.seed)
        model = ClapModel(data.x.shape[1], model_cfg)
        step, dev = train_heads(model, data, classes, cfg)
        with torch.no_grad():
            test = (scores(model.zero_shot_logits(test_x, classes), test_y, len(classes)) if len(test_y)
                    else {"wa": math.nan, "ua": math.nan})
    return model, step, dev, test
