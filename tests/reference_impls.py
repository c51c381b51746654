"""The readable reference implementations that the package's fast paths are tested (and, by ``experiments/``'s
benchmark scripts, timed) against. Test-only: nothing in ``metalearn`` calls them.

- MAML family: :func:`adapt_reference` (one episode's inner loop by ordinary autograd, ``create_graph=not
  first_order``), :func:`meta_gradients_reference` and :func:`maml_predict_reference`, the per-episode versions
  of ``MAML.meta_gradients`` / ``MAML.predict`` (their stacked path: ``metalearn.fewshot.algorithms.stacked``);
- Reptile: :func:`inner_train_reference` (leaf tensors and ``torch.optim``, one task), :func:`meta_delta_reference`
  and :func:`reptile_predict_reference`, the per-task versions of ``Reptile.meta_delta`` / ``Reptile.predict``;
- :func:`extract_variants`: ``extract`` for every backbone after filling their caches with the shared trunk;
- :func:`compare_cells`: the statistics of one comparison cell, the way ``comparisons`` computes each row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from metalearn.data.manifest import Utterance
from metalearn.features.backbones import SpeechBackbone
from metalearn.features.embeddings import EmbeddingConfig, Embeddings, extract
from metalearn.features.shared_trunk import fill_caches
from metalearn.fewshot.algorithms.functional import cross_entropy
from metalearn.fewshot.algorithms.heads import Params, check_episodes, head_forward, last_keys
from metalearn.fewshot.algorithms.maml import ANIL, MAML, InnerLR, Meta, _flat, _map
from metalearn.fewshot.algorithms.reptile import ADAM_BETAS, ADAM_EPS, Reptile
from metalearn.report.compare import _statistics, index_cell, meta_seed_set, speaker_differences
from metalearn.report.stats import paired_test
from metalearn.report.summary import METRICS

Forward = Callable[[Params, Tensor], Tensor]

# --- MAML, FOMAML, ANIL, Meta-SGD: one episode at a time by autograd --------------------------------------------


def _lr(inner_lr: InnerLR, key: str) -> float | Tensor:
    return inner_lr[key] if isinstance(inner_lr, dict) else inner_lr


def sgd_step(fast: Params, grads: Params, inner_lr: InnerLR, first_order: bool) -> Params:
    """``fast - lr * grad`` per key (one fused kernel); ``first_order`` detaches the gradients, not the parameters."""
    out = {}
    for k, v in fast.items():
        g, lr = (grads[k].detach() if first_order else grads[k]), _lr(inner_lr, k)
        out[k] = torch.addcmul(v, lr, g, value=-1) if isinstance(lr, Tensor) else v.add(g, alpha=-lr)
    return out


def _split(params: Params, adapt_keys: Sequence[str] | None) -> tuple[Params, Params]:
    keys = list(params) if adapt_keys is None else list(adapt_keys)
    return {k: params[k] for k in keys}, {k: v for k, v in params.items() if k not in keys}


def adapt_reference(params: Params, support_x: Tensor, support_y: Tensor, steps: int, inner_lr: InnerLR,
                    first_order: bool = False, adapt_keys: Sequence[str] | None = None,
                    forward: Forward = head_forward) -> Params:
    """``steps`` SGD steps on one episode's support cross-entropy, by ordinary autograd (``create_graph=not
    first_order``): the readable reference of :func:`stacked.sgd_path`.

    Args:
        params: the initialisation (meta-parameters); support_x: [S, D]; support_y: [S] ints.
        inner_lr: a scalar, or per-key tensors shaped like the parameters (Meta-SGD).
        first_order: detach the inner gradients (FOMAML); otherwise second order (gradients of gradients).
        adapt_keys: which parameters adapt (None = all, MAML; the last layer's keys = ANIL).
    Returns:
        every parameter, the adapted ones replaced.
    """
    fast, frozen = _split(params, adapt_keys)
    fast = {k: v if v.requires_grad else v.detach().requires_grad_() for k, v in fast.items()}
    with torch.enable_grad():
        for _ in range(steps):
            loss = F.cross_entropy(forward({**frozen, **fast}, support_x), support_y)
            grads = torch.autograd.grad(loss, list(fast.values()), create_graph=not first_order)
            fast = sgd_step(fast, dict(zip(fast, grads, strict=True)), inner_lr, first_order)
    return {**params, **fast}


def adapt_one_reference(model: MAML, meta: Meta, support_x: Tensor, support_y: Tensor, steps: int) -> Params:
    """``model``'s adapted head parameters of one episode ([S, D], [S]) by the per-episode autograd loop
    (ANIL adapts its last layer only, on the body's features)."""
    adapt_keys = last_keys(meta["head"]) if isinstance(model, ANIL) else None
    return adapt_reference(meta["head"], support_x, support_y, steps, model._inner_lr(meta), model.first_order,
                           adapt_keys)


def episode_loss_reference(model: MAML, meta: Meta, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> Tensor:
    """Query cross-entropy after adapting on the support: [S, D], [S], [Q, D], [Q] -> scalar."""
    adapted = adapt_one_reference(model, meta, sx, sy, model.cfg.inner_steps)
    return cross_entropy(head_forward(adapted, qx), qy)


def meta_gradients_reference(model: MAML, batch: Sequence[Tensor]) -> tuple[Tensor, Meta]:
    """``model.meta_gradients(batch)`` by the per-episode loop: the mean query loss and its meta-gradient."""
    sx, qx = model._cast(batch[0]), model._cast(batch[2])
    sy, qy = batch[1].to(model.device), batch[3].to(model.device)
    with torch.enable_grad():
        losses = [episode_loss_reference(model, model.meta, *ep) for ep in zip(sx, sy, qx, qy, strict=True)]
        loss = torch.stack(losses).mean()
        grads = iter(torch.autograd.grad(loss, _flat(model.meta)))
    return loss.detach(), _map(lambda _: next(grads), model.meta)


def maml_predict_reference(model: MAML, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int) -> Tensor:
    """``model.predict`` without validation data, by the per-episode autograd loop -> logits [E, Q, W]."""
    check_episodes(model.name, model.ways, model.dim, ways, support_x)
    meta = _map(torch.Tensor.detach, model.meta)
    out = []
    for sx, sy, qx in zip(model._cast(support_x), support_y.to(model.device), model._cast(query_x), strict=True):
        adapted = adapt_one_reference(model, meta, sx, sy, model.cfg.test_steps)
        out.append(head_forward(adapted, qx).detach())
    return torch.stack(out).to(query_x.device)


# --- Reptile: one task at a time with torch.optim -----------------------------------------------------------------


def inner_train_reference(params: Params, x: Tensor, y: Tensor, steps: int, lr: float, optimizer: str) -> Params:
    """``reptile.inner_train`` with leaf tensors and ``torch.optim`` (SGD or Adam), one task."""
    leaves = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
    opt = (torch.optim.SGD(leaves.values(), lr=lr) if optimizer == "sgd"
           else torch.optim.Adam(leaves.values(), lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS))
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            cross_entropy(head_forward(leaves, x), y).backward()
            opt.step()
    return {k: v.detach() for k, v in leaves.items()}


def _train_reference(model: Reptile, params: Params, x: Tensor, y: Tensor, steps: int) -> Params:
    return inner_train_reference(params, x, y, steps, model.cfg.inner_lr, model.cfg.inner_optimizer)


def meta_delta_reference(model: Reptile, batch: Sequence[Tensor]) -> Params:
    """``model.meta_delta(batch)`` by the per-task loop: mean over tasks of (adapted - init)."""
    x = torch.cat([batch[0], batch[2]], dim=1).to(model.device, model.dtype)
    y = torch.cat([batch[1], batch[3]], dim=1).to(model.device)
    head, steps = model.meta["head"], model.cfg.inner_steps
    tasks = [_train_reference(model, head, xe, ye, steps) for xe, ye in zip(x, y, strict=True)]
    adapted = {k: torch.stack([t[k] for t in tasks]) for k in head}
    return {k: adapted[k].mean(0) - head[k] for k in head}


def reptile_predict_reference(model: Reptile, support_x: Tensor, support_y: Tensor, query_x: Tensor,
                              ways: int) -> Tensor:
    """``model.predict`` without validation data, one episode at a time with ``torch.optim`` -> [E, Q, W]."""
    check_episodes(model.name, model.ways, model.dim, ways, support_x)
    out = []
    for sx, sy, qx in zip(support_x, support_y, query_x, strict=True):
        sx, qx = sx.to(model.device, model.dtype), qx.to(model.device, model.dtype)
        adapted = _train_reference(model, model.meta["head"], sx, sy.to(model.device), model.cfg.test_steps)
        out.append(head_forward(adapted, qx))
    return torch.stack(out).to(query_x.device)


def predict_reference(model: MAML | Reptile, support_x: Tensor, support_y: Tensor, query_x: Tensor,
                      ways: int) -> Tensor:
    """The per-episode ``predict`` of a MAML-family model or of Reptile."""
    fn = reptile_predict_reference if isinstance(model, Reptile) else maml_predict_reference
    return fn(model, support_x, support_y, query_x, ways)


# --- embeddings and report --------------------------------------------------------------------------------------


def extract_variants(rows: Sequence[Utterance], backbones: Sequence[SpeechBackbone], cfg: EmbeddingConfig
                     ) -> list[Embeddings]:
    """``extract(rows, b, cfg)`` for every backbone, computing the layers they share once per batch."""
    fill_caches(rows, backbones, cfg)
    return [extract(rows, b, cfg) for b in backbones]


def compare_cells(method: Sequence[dict], reference: Sequence[dict], metric: str) -> dict | None:
    """The statistics columns (n_speakers ... worse, no p_holm) of ``method`` vs ``reference``, the records
    of one (protocol, k) each; None without any paired episode."""
    with_meta = meta_seed_set(method) == meta_seed_set(reference)
    _, diffs, n_pairs = speaker_differences(index_cell(method, with_meta), index_cell(reference, with_meta))
    return _statistics(paired_test(diffs[:, METRICS.index(metric)]), n_pairs) if n_pairs else None
