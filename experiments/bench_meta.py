"""Meta-training speed on its roofline: the MAML family and Reptile, stacked path vs per-episode loop vs learn2learn.

    python experiments/bench_meta.py [--threads 2] [--quick]

Regimes (5-way 1-shot tasks, 5 queries per class, 512-d inputs, 5 inner steps, the same fixed task batches
for every backend):

- overhead-bound: a linear head (MAML, second order) and ANIL's last layer over a 512-256 body, 256 tasks per
  meta-step: little arithmetic per task, so per-task and per-op costs decide;
- arithmetic-bound: MAML (second order) and FOMAML with the MLP head 512-256-5, 32 tasks per meta-step;
- Reptile: MLP 512-256-5, 32 tasks, 5 inner Adam steps on the 30 support + query rows.

Regime names say what bounds the textbook (per-task, dense) formulation; at 256 tasks ANIL's body (a
512-256 layer on 7,680 rows, forward and backward) is itself dense arithmetic.

Backends: ``stacked`` (metalearn's fast path: episode-stacked parameters, hand-written gradients, the first
layer in low-rank form), ``loop`` (the per-episode autograd reference of tests/reference_impls.py),
``learn2learn`` (clone-and-adapt, MAML and FOMAML only, when installed: ``make setup-l2l``). Each reports the
best-of-repeats time per meta-step, the matmul FLOPs it executes (FlopCounterMode) and those of the dense
formulation (bench_roofline.py), both as GFLOP/s beside the matmul peak measured just before each regime, and
the largest gap of its first meta-gradient (Reptile: its meta-update) to the loop's.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch
from bench_roofline import (
    anil_dense_flops,
    best_seconds,
    counted_flops,
    maml_dense_flops,
    matmul_peak,
    reptile_dense_flops,
)

from metalearn.fewshot.algorithms.maml import ANIL, FOMAML, MAML, ANILConfig, MAMLConfig
from metalearn.fewshot.algorithms.reptile import Reptile, ReptileConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: the loop lives in tests/
from tests.reference_impls import meta_delta_reference, meta_gradients_reference  # noqa: E402

DIM, WAYS, SHOTS, QUERIES, STEPS = 512, 5, 1, 5, 5


@dataclasses.dataclass(frozen=True)
class Regime:
    name: str
    algorithm: str  # maml, fomaml, anil, reptile
    hidden: tuple[int, ...]
    tasks: int


REGIMES = (Regime("overhead: linear head, MAML", "maml", (), 256),
           Regime("overhead: ANIL (last layer 256-5)", "anil", (256,), 256),
           Regime("arithmetic: MLP head, MAML", "maml", (256,), 32),
           Regime("arithmetic: MLP head, FOMAML", "fomaml", (256,), 32),
           Regime("Reptile: MLP head, inner Adam", "reptile", (256,), 32))


def task_batch(tasks: int, seed: int) -> tuple[torch.Tensor, ...]:
    """One batch of 5-way tasks: class prototypes + a task offset + noise; support [E, 5, D], query [E, 25, D]."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.randn(64, DIM, generator=g)
    cls = torch.stack([torch.randperm(64, generator=g)[:WAYS] for _ in range(tasks)])  # [E, W]
    offset = torch.randn(tasks, 1, DIM, generator=g)
    sy = torch.arange(WAYS).repeat_interleave(SHOTS).expand(tasks, -1).clone()
    qy = torch.arange(WAYS).repeat_interleave(QUERIES).expand(tasks, -1).clone()
    sx = protos[cls.gather(1, sy)] + offset + 1.5 * torch.randn(tasks, sy.shape[1], DIM, generator=g)
    qx = protos[cls.gather(1, qy)] + offset + 1.5 * torch.randn(tasks, qy.shape[1], DIM, generator=g)
    return sx, sy, qx, qy


def _model(regime: Regime, backend: str):
    if regime.algorithm == "reptile":
        return Reptile(DIM, WAYS, ReptileConfig(hidden=regime.hidden, inner_steps=STEPS, meta_batch=regime.tasks))
    cfg = MAMLConfig(hidden=regime.hidden, inner_steps=STEPS, meta_batch=regime.tasks)
    if backend == "learn2learn":
        from metalearn.fewshot.algorithms.l2l_backend import L2LMAML
        return L2LMAML(DIM, WAYS, cfg, seed=0, first_order=regime.algorithm == "fomaml")
    if regime.algorithm == "anil":
        return ANIL(DIM, WAYS, ANILConfig(**dataclasses.asdict(cfg)), seed=0)
    return (FOMAML if regime.algorithm == "fomaml" else MAML)(DIM, WAYS, cfg, seed=0)


def _l2l_step(model, batch) -> list[torch.Tensor]:
    """learn2learn's meta-gradient of one batch (its loop: clone, adapt, query loss per task), then Adam."""
    sx, sy, qx, qy = batch
    model.optimizer.zero_grad()
    loss = sum(torch.nn.functional.cross_entropy(model._adapted(sx[e], sy[e], STEPS)(qx[e]), qy[e])
               for e in range(sx.shape[0])) / sx.shape[0]
    loss.backward()
    grads = [p.grad.detach().clone() for p in model.learner.module.parameters()]
    model.optimizer.step()
    return grads


def _step(regime: Regime, backend: str, model, batch) -> list[torch.Tensor]:
    """One meta-step (gradient and update) of ``model``; returns the flattened meta-gradient (Reptile: the delta)."""
    if backend == "learn2learn":
        return [g.flatten() for g in _l2l_step(model, batch)]
    if regime.algorithm == "reptile":
        delta = meta_delta_reference(model, batch) if backend == "loop" else model.meta_delta(batch)
        model.meta["head"] = {k: v + model.cfg.meta_lr * delta[k] for k, v in model.meta["head"].items()}
        return [delta[k].flatten() for k in delta]
    _, grads = meta_gradients_reference(model, batch) if backend == "loop" else model.meta_gradients(batch)
    for p, g in zip(model.meta["head"].values(), grads["head"].values(), strict=True):
        p.grad = g
    model.optimizer.step()
    return [g.flatten() for g in grads["head"].values()]  # w0, b0, w1, b1: learn2learn's order too


def _backends(regime: Regime) -> list[str]:
    return ["stacked", "loop"] + (["learn2learn"] if regime.algorithm in ("maml", "fomaml") else [])


def measure(regime: Regime, repeats: dict[str, int]) -> dict:
    """Time, FLOPs and gradient parity of every backend on one regime (the same task batch for all), and the
    matmul peak measured just before (the machine's load changes within a run)."""
    peak = matmul_peak()
    batch = task_batch(regime.tasks, seed=1)
    dims = [DIM, *regime.hidden, WAYS]
    rows_s, rows_q = WAYS * SHOTS, WAYS * QUERIES
    if regime.algorithm == "reptile":
        dense = regime.tasks * reptile_dense_flops(dims, rows_s + rows_q, STEPS)
    else:
        count = anil_dense_flops if regime.algorithm == "anil" else maml_dense_flops
        dense = regime.tasks * count(dims, rows_s, rows_q, STEPS, regime.algorithm != "fomaml")
    out: dict = {"regime": regime.name, "tasks": regime.tasks, "dense_gflop_per_step": round(dense / 1e9, 3),
                 "peak_gflops": round(peak, 1)}
    first: dict[str, torch.Tensor] = {}
    for backend in _backends(regime):
        try:
            model = _model(regime, backend)
        except Exception as e:  # learn2learn not installed: say so in the results
            out[backend] = f"not measured ({type(e).__name__}: {e})"
            continue
        first[backend] = torch.cat(_step(regime, backend, _model(regime, backend), batch))
        executed = counted_flops(lambda m=model, b=backend: _step(regime, b, m, batch))
        seconds = best_seconds(lambda m=model, b=backend: _step(regime, b, m, batch), repeats[backend])
        out[backend] = {"ms_per_step": round(1000 * seconds, 2),
                        "executed_gflops": round(executed / seconds / 1e9, 1),
                        "executed_pct_of_peak": round(100 * executed / seconds / 1e9 / peak, 1),
                        "dense_equivalent_gflops": round(dense / seconds / 1e9, 1)}
    for backend, grad in first.items():
        out[backend]["time_over_stacked"] = round(out[backend]["ms_per_step"] / out["stacked"]["ms_per_step"], 2)
        if backend != "loop":
            out[backend]["max_gap_to_loop"] = float((grad - first["loop"]).abs().max())
    return out


def run(quick: bool = False) -> list[dict]:
    """Every regime; ``quick`` times fewer repeats (for tests and a first look)."""
    repeats = {"stacked": 2 if quick else 7, "loop": 1 if quick else 3, "learn2learn": 1 if quick else 3}
    return [measure(r, repeats) for r in REGIMES]
