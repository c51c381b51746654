"""Backbone fine-tuning batched across episodes (``episodes_per_pass``) against the per-trial path.

    python experiments/bench_fullft.py [--trials 8] [--per-pass 8] [--steps 25] [--device cpu]

The demo's full_finetune shapes: Whisper base (the embedded default) keeping its first layer (``backbone.layers:
1``), the feature state 1, trainable_layers 1 on the cached trunk, backbone_steps 5, finetune's linear head,
validation macro-F1 every 5 steps; 5-way episodes of synthetic 3 s clips (k = 5 support clips per class, 2
validation and 3 query clips per class; bench_trunk.py's clips). The same ``trials`` episodes run one at a time
(``run_episode``) and ``per_pass`` at a time (``run_episodes``), each on its own warm trunk cache (the clips'
trunks computed before timing). Reports seconds per trial, the speedup, the largest query-logit gap and whether
every episode selected the same step, the matmul FLOPs per trial (``FlopCounterMode``: forward and backward) and
the GFLOP/s each path achieved against a large matmul measured in the same run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import bench_roofline
import bench_trunk
import numpy as np
import torch

from metalearn.features.backbones import BackboneConfig, build_backbone
from metalearn.fewshot.algorithms import AudioInputs
from metalearn.fewshot.algorithms.full_finetune import FullFinetune, FullFinetuneConfig

DEMO = dataclasses.replace(bench_trunk.DEMO, backbone_steps=5)
DEMO_BACKBONE = BackboneConfig(layers=1)


def compare(adapter: FullFinetune, eps: list, per_pass: int, device: torch.device) -> dict:
    """Both paths on ``eps`` with one adapter (its trunk cache warm): seconds, logits, steps and FLOPs of each."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    adapter.run_episodes(eps[:1])  # warm: every clip's trunk cached, kernels loaded
    with torch.no_grad():
        adapter.features([k for ep in eps for k in ep.support + ep.validation + ep.query],
                         adapter.load([k for ep in eps for k in ep.support + ep.validation + ep.query]))
    sync()
    start = time.perf_counter()
    trial = [adapter.run_episode(ep) for ep in eps]
    sync()
    trial_s = time.perf_counter() - start
    start = time.perf_counter()
    together, steps = [], []
    for i in range(0, len(eps), per_pass):
        q, s = adapter.run_episodes(eps[i : i + per_pass])
        together += q
        steps += s
    sync()
    batched_s = time.perf_counter() - start
    trial_flops = bench_roofline.counted_flops(lambda: adapter.run_episode(eps[0]))
    batched_flops = bench_roofline.counted_flops(lambda: adapter.run_episodes(eps[:per_pass])) / min(per_pass,
                                                                                                     len(eps))
    gap = max(float((q - b).abs().max()) for (q, _), b in zip(trial, together, strict=True))
    same = all(info["best_step"] == s for (_, info), s in zip(trial, steps, strict=True))
    return {"trial_s": trial_s, "batched_s": batched_s, "gap": gap, "same_steps": same,
            "trial_flops": trial_flops, "batched_flops": batched_flops}


def run(trials: int = 8, per_pass: int = 8, steps: int | None = None, device: str = "cpu",
        backbone: BackboneConfig = DEMO_BACKBONE, layer: int = 1, seconds: float = 3.0,
        clips: tuple[int, int, int] = (5, 2, 3), cfg: FullFinetuneConfig = DEMO, peak: bool = True,
        factory=None) -> dict:  # noqa: ANN001
    """The comparison at ``backbone`` / ``layer`` (default: the demo's; ``factory``: () -> a backbone, instead)
    on ``trials`` episodes."""
    cfg = dataclasses.replace(cfg, episodes_per_pass=per_pass, **({} if steps is None else {"steps": steps}))
    dev = torch.device(device)
    factory = factory or (lambda: build_backbone(backbone))
    factory()  # the first build imports the weights: not part of any trial
    k, n_val, n_query = clips
    with tempfile.TemporaryDirectory() as tmp:
        paths = bench_trunk.write_clips(Path(tmp), 2, k + n_val + n_query, seconds)
        eps = bench_trunk.episodes(2, k, n_val, n_query, trials)
        adapter = FullFinetune(AudioInputs(factory, paths, layer=layer, max_seconds=seconds), cfg, device=dev)
        got = compare(adapter, eps, per_pass, dev)
    gflops_peak = bench_roofline.matmul_peak() if peak and dev.type == "cpu" else None
    trial_s, batched_s = got["trial_s"] / trials, got["batched_s"] / trials
    out = {"backbone": f"{backbone.family}:{backbone.source}" + (f":layers={backbone.layers}" if backbone.layers
                                                                 else ""),
           "state": layer, "trainable_layers": cfg.trainable_layers, "steps": cfg.steps,
           "backbone_steps": cfg.backbone_steps, "eval_every": cfg.eval_every, "device": device, "trials": trials,
           "episodes_per_pass": per_pass, "clip_seconds": seconds,
           "support_val_query_clips": [bench_trunk.WAYS * c for c in clips],
           "per_trial_s_per_trial": round(trial_s, 3), "batched_s_per_trial": round(batched_s, 3),
           "speedup": round(trial_s / batched_s, 2), "max_query_logit_gap": got["gap"],
           "same_selected_steps": got["same_steps"],
           "per_trial_gflop_per_trial": round(got["trial_flops"] / 1e9, 2),
           "batched_gflop_per_trial": round(got["batched_flops"] / 1e9, 2),
           "per_trial_gflops": round(got["trial_flops"] / 1e9 / trial_s, 1),
           "batched_gflops": round(got["batched_flops"] / 1e9 / batched_s, 1)}
    if dev.type == "cuda":
        out["max_memory_allocated_gb"] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 2)
    if gflops_peak is not None:
        out["matmul_peak_gflops"] = round(gflops_peak, 1)
        out["per_trial_pct_of_peak"] = round(100 * out["per_trial_gflops"] / gflops_peak, 1)
        out["batched_pct_of_peak"] = round(100 * out["batched_gflops"] / gflops_peak, 1)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--per-pass", type=int, default=8)
    p.add_argument("--steps", type=int, default=None, help="finetune steps (default: the demo's 25)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    print(json.dumps(run(args.trials, args.per_pass, args.steps, args.device), indent=1))


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
