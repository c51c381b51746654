"""Benchmark: the vectorised trial engine versus the per-episode loop, and MAML versus learn2learn.

    python experiments/bench_trials.py [--variants 16] [--threads 1]

Part A, Paper A's full grid at the paper's scale: 20 speakers x 5 emotions with ESD's split sizes
(300 train, 20 evaluation, 30 test clips each), 768-d embeddings (wav2vec2-base) with speaker-specific
class means; binary episodes for 5 targets x 7 k x 3 repetitions = 2,100 per pretune variant; each
variant gets its own embedding table. Head fine-tuning (100 Adam steps, model selection by validation
macro-F1 every 10 steps) through the engine, all trials vectorised, versus the per-episode reference
loop on a subset of the same episodes (same scores checked).
Part B, MAML meta-training on the same tasks: the vectorised torch.func path, the per-episode autograd
loop, and learn2learn's clone-and-adapt loop when installed (make setup-l2l): meta-steps per second and
the parameters after the same steps. Writes results/bench_trials.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from metalearn.data.manifest import Utterance, utterance_key
from metalearn.fewshot.algorithms.finetune import Finetune, FinetuneConfig
from metalearn.fewshot.algorithms.maml import MAML, MAMLConfig
from metalearn.fewshot.episodes import binary_episodes
from metalearn.fewshot.trials import run_trials

EMOTIONS = ("neutral", "happy", "angry", "sad", "surprise")
KS = (2, 4, 8, 16, 24, 32, 64)


def paper_table(seed: int, speakers: int = 20, dim: int = 768) -> tuple[list[Utterance], torch.Tensor]:
    """ESD-shaped rows and embeddings: class means = shared prototype + speaker offset, unit noise."""
    rng = np.random.default_rng(seed)
    protos = rng.normal(size=(5, dim))
    rows, blocks = [], []
    for s in range(speakers):
        spk = f"{s + 1:04d}"
        own = protos + rng.normal(scale=1.0, size=(5, dim)) + rng.normal(scale=2.0, size=dim)
        for e, emotion in enumerate(EMOTIONS):
            for split, n in (("evaluation", 20), ("test", 30), ("train", 300)):
                for j in range(n):
                    uid = f"{spk}_{emotion}_{split}_{j}"
                    rows.append(Utterance(uid, f"/synthetic/{uid}.wav", "esd", spk, "unknown", emotion, emotion,
                                          split, 3.0, 16000))
            blocks.append(own[e] + rng.normal(scale=4.0, size=(350, dim)))
    return rows, torch.tensor(np.concatenate(blocks), dtype=torch.float32)


def part_a(variants: int, reference_trials: int) -> dict:
    """The 33,600-trial grid (for 16 variants) with the vectorised engine; the loop on a subset."""
    engine_s, n_trials, f1 = 0.0, 0, []
    for v in range(variants):
        rows, x = paper_table(seed=v)
        index_of = {utterance_key(u): i for i, u in enumerate(rows)}
        episodes, skipped = binary_episodes(rows, sorted({u.speaker for u in rows}), EMOTIONS, KS, 3, seed=0)
        assert not skipped and len(episodes) == 2100
        start = time.perf_counter()
        records = run_trials(Finetune(768), episodes, x, index_of, run="bench", pretune=f"v{v}", seed=0)
        engine_s += time.perf_counter() - start
        n_trials += len(records)
        f1 += [r["macro_f1"] for r in records]
        if v == 0:
            subset = episodes[:: max(1, len(episodes) // reference_trials)][:reference_trials]
            start = time.perf_counter()
            ref = run_trials(Finetune(768, FinetuneConfig(vectorized=False)), subset, x, index_of, run="bench",
                             pretune="v0", seed=0, chunk=1)
            ref_s = time.perf_counter() - start
            fast = run_trials(Finetune(768), subset, x, index_of, run="bench", pretune="v0", seed=0)
            gap = max(abs(a["macro_f1"] - b["macro_f1"]) for a, b in zip(
                sorted(ref, key=lambda r: r["episode_id"]), sorted(fast, key=lambda r: r["episode_id"]), strict=True))
    return {"trials": n_trials, "variants": variants, "engine_seconds": round(engine_s, 1),
            "engine_ms_per_trial": round(1000 * engine_s / n_trials, 2),
            "reference_ms_per_trial": round(1000 * ref_s / len(subset), 1), "reference_trials_timed": len(subset),
            "speedup": round((ref_s / len(subset)) / (engine_s / n_trials), 1),
            "max_macro_f1_gap_vs_reference": gap, "macro_f1_mean": round(float(np.mean(f1)), 4)}


class TaskStream:
    """The same sequence of 5-way tasks for every backend (one fixed batch per step)."""

    def __init__(self, dim: int, ways: int, shots: int, queries: int, batch: int, steps: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        protos = torch.randn(64, dim, generator=g)
        self.batches = []
        for _ in range(steps):
            cls = torch.stack([torch.randperm(64, generator=g)[:ways] for _ in range(batch)])  # [E, W]
            offset = torch.randn(batch, 1, dim, generator=g)
            sy = torch.arange(ways).repeat_interleave(shots).expand(batch, -1)
            qy = torch.arange(ways).repeat_interleave(queries).expand(batch, -1)
            sx = protos[cls.gather(1, sy)] + offset + 1.5 * torch.randn(batch, sy.shape[1], dim, generator=g)
            qx = protos[cls.gather(1, qy)] + offset + 1.5 * torch.randn(batch, qy.shape[1], dim, generator=g)
            self.batches.append((sx, sy.clone(), qx, qy.clone()))
        self.i = 0

    def sample(self, n: int):
        batch = self.batches[self.i % len(self.batches)]
        self.i += 1
        return batch


def _accuracy(model, stream: TaskStream, ways: int) -> float:
    """Mean query accuracy after test-time adaptation on held-out tasks."""
    correct = []
    for sx, sy, qx, qy in stream.batches:
        logits = model.predict(sx, sy, qx, ways)
        correct.append((logits.argmax(-1) == qy).float().mean().item())
    return round(float(np.mean(correct)), 4)


def _first_gradient(name: str, model, batch) -> torch.Tensor:
    """The first meta-gradient, flattened in head order (w0, b0, w1, b1)."""
    if name == "learn2learn":
        model.optimizer.zero_grad()
        sx, sy, qx, qy = batch
        loss = sum(torch.nn.functional.cross_entropy(model._adapted(sx[e], sy[e], model.cfg.inner_steps)(qx[e]), qy[e])
                   for e in range(sx.shape[0])) / sx.shape[0]
        loss.backward()
        grads = [p.grad.flatten() for p in model.learner.module.parameters()]
        model.optimizer.zero_grad()
        return torch.cat(grads)
    _, grads = model.meta_gradients(batch, reference=name == "loop")
    return torch.cat([grads["head"][k].flatten() for k in ("w0", "b0", "w1", "b1")])


def part_b(steps: int, batch: int) -> dict:
    """Meta-steps per second on identical tasks: vectorised, per-episode loop, learn2learn; gradient and
    accuracy parity (parameters drift apart under Adam from float32 rounding alone, so they are not compared)."""
    dim, ways, shots, queries = 512, 5, 1, 5
    cfg = MAMLConfig(hidden=(256,), inner_steps=5, meta_batch=batch)  # default inner_lr (0.05)
    out: dict = {"tasks_per_step": batch, "shape": f"{ways}-way {shots}-shot, {dim}-d, MLP {dim}-256-{ways}, "
                 f"{cfg.inner_steps} inner steps, second order", "steps": steps}
    held_out = TaskStream(dim, ways, shots, queries, batch, 4, seed=2)
    grads, seconds = {}, {}
    for name in ("vectorised", "loop", "learn2learn"):
        if name == "learn2learn":
            try:
                from metalearn.fewshot.algorithms.l2l_backend import L2LMAML
                model = L2LMAML(dim, ways, cfg, seed=0)
            except Exception as e:  # not installed: say so in the results
                out["learn2learn"] = f"not measured ({e})"
                continue
        else:
            model = MAML(dim, ways, cfg, seed=0)
        stream = TaskStream(dim, ways, shots, queries, batch, steps, seed=1)
        grads[name] = _first_gradient(name, model, stream.batches[0])
        if name == "loop":
            model.meta_train = _loop_meta_train(model)  # type: ignore[method-assign]
        start = time.perf_counter()
        model.meta_train(stream, steps)
        seconds[name] = time.perf_counter() - start
        out[f"{name}_ms_per_meta_step"] = round(1000 * seconds[name] / steps, 1)
        out[f"{name}_held_out_accuracy"] = _accuracy(model, held_out, ways)
    for name in seconds:
        out[f"{name}_time_over_vectorised"] = round(seconds[name] / seconds["vectorised"], 2)
        if name != "vectorised":
            out[f"max_first_meta_gradient_gap_{name}"] = float((grads[name] - grads["vectorised"]).abs().max())
    return out


def _loop_meta_train(model: MAML):
    """MAML.meta_train with the per-episode reference gradients."""
    def meta_train(sampler, steps: int) -> None:
        for _ in range(steps):
            loss, grads = model.meta_gradients(sampler.sample(model.cfg.meta_batch), reference=True)
            for p, g in zip([*model.meta["head"].values()], [*grads["head"].values()], strict=True):
                p.grad = g
            model.optimizer.step()
    return meta_train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", type=int, default=16, help="pretune variants (16 = Paper A's 33,600 trials)")
    p.add_argument("--reference-trials", type=int, default=64)
    p.add_argument("--maml-steps", type=int, default=10)
    p.add_argument("--maml-tasks", type=int, default=32)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--out", default="results/bench_trials")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    result = {"command": "python " + " ".join(sys.argv), "threads": args.threads,
              "machine": platform.machine(), "torch": torch.__version__,
              "paper_a_grid": part_a(args.variants, args.reference_trials),
              "maml_meta_training": part_b(args.maml_steps, args.maml_tasks)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    lines = ["# Trial engine benchmark", "", f"`{result['command']}` ({args.threads} CPU threads)", ""]
    for part in ("paper_a_grid", "maml_meta_training"):
        lines += [f"## {part}", "", "| measure | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in result[part].items()] + [""]
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
