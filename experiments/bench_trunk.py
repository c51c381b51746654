"""Full-backbone fine-tuning with frozen lower layers: from audio vs on the cached trunk, side by side.

    python experiments/bench_trunk.py [--trials 3] [--backbone default] [--device cpu]

The demo's full_finetune settings (Whisper base, the last layer and finetune's linear head train: full-batch
Adam, 25 steps, validation macro-F1 every 5 steps) on 5-way episodes of synthetic 3 s clips (k = 5 support clips
per class, 2 validation and 3 query clips per class). The same episodes run
through FullFinetune twice: ``trunk_cache_mb=0`` (every step re-runs the log-mel front end and the frozen
layers) and the default (the frozen layers' output computed once per clip). Reports seconds per trial (the
cached path's first trial computes its clips' trunks; later trials reuse them), trials per minute, the speedup,
the largest query-logit gap between the two paths, and the FLOP ratios (from audio / cached) of a training step
(the support clips, forward and backward) and of an evaluation batch: the speedup the arithmetic allows, since
the top layer still trains.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from bench_roofline import counted_flops

from metalearn.features.backbones import BackboneConfig, build_backbone
from metalearn.fewshot.algorithms import AudioInputs
from metalearn.fewshot.algorithms.full_finetune import FullFinetune, FullFinetuneConfig
from metalearn.fewshot.episodes import Episode

SR, WAYS = 16_000, 5
DEMO = FullFinetuneConfig(steps=25, eval_every=5, trainable_layers=1, backbone_lr=1e-4)


def write_clips(root: Path, speakers: int, per_class: int, seconds: float) -> dict[str, str]:
    """Synthetic clips: class c is a tone at 200 * (c + 1) Hz with speaker-specific vibrato, plus noise."""
    rng, paths = np.random.default_rng(0), {}
    t = np.arange(int(seconds * SR)) / SR
    for s in range(speakers):
        for c in range(WAYS):
            for i in range(per_class):
                f = 200.0 * (c + 1) * (1 + 0.01 * np.sin(2 * np.pi * (s + 1) * t))
                wave = 0.4 * np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3)) + 0.05 * rng.standard_normal(t.size)
                path = root / f"s{s}_c{c}_{i}.wav"
                sf.write(path, wave.astype(np.float32), SR)
                paths[f"bench/s{s}_c{c}_{i}"] = str(path)
    return paths


def episodes(speakers: int, k: int, n_val: int, n_query: int, trials: int) -> list[Episode]:
    """``trials`` 5-way episodes cycling over the speakers, disjoint support / validation / query clips."""
    out = []
    for r in range(trials):
        s = r % speakers
        def keys(lo: int, hi: int, s=s) -> tuple[tuple[str, ...], tuple[int, ...]]:
            items = [(f"bench/s{s}_c{c}_{i}", c) for i in range(lo, hi) for c in range(WAYS)]
            return tuple(key for key, _ in items), tuple(y for _, y in items)
        (sup, sy), (val, vy), (qry, qy) = keys(0, k), keys(k, k + n_val), keys(k + n_val, k + n_val + n_query)
        out.append(Episode(episode_id=f"nway/k{k}/s{s}/r{r}", protocol="nway", speaker=f"s{s}", k=k, repetition=r,
                           seed=0, classes=tuple(f"c{c}" for c in range(WAYS)), target_emotion="",
                           support=sup, support_labels=sy, query=qry, query_labels=qy, validation=val,
                           validation_labels=vy))
    return out


def _time(adapter: FullFinetune, eps: list[Episode]) -> tuple[list[float], list[torch.Tensor]]:
    seconds, logits = [], []
    for ep in eps:
        start = time.perf_counter()
        query, _ = adapter.run_episode(ep)
        seconds.append(time.perf_counter() - start)
        logits.append(query)
    return seconds, logits


def step_flops(adapter: FullFinetune, ep: Episode) -> tuple[int, int]:
    """FLOPs (matmuls, convolutions, attention) of one training step's features (the support clips, forward and
    backward) and of one evaluation batch (the cached path counted with its trunks already computed)."""
    waves = adapter.load(ep.support + ep.validation)
    adapter.prepare()
    train_keys, eval_keys = list(ep.support), list(ep.validation[:8])
    with torch.no_grad():
        adapter.features(train_keys + eval_keys, waves)  # fills the trunk cache, if any
    train = counted_flops(lambda: adapter.features(train_keys, waves).sum().backward())
    with torch.no_grad():
        return train, counted_flops(lambda: adapter.features(eval_keys, waves))


def run(quick: bool = False, device: str = "cpu", backbone: BackboneConfig | None = None, trials: int = 3,
        cfg: FullFinetuneConfig = DEMO, seconds: float = 3.0, clips: tuple[int, int, int] = (5, 2, 3)) -> dict:
    """Both paths on the same ``trials`` episodes of ``clips`` = (k, validation, query) clips per class;
    ``quick``: 2 trials of 1 s clips."""
    trials, seconds = (2, 1.0) if quick else (trials, seconds)
    backbone = backbone or BackboneConfig()
    build_backbone(backbone)  # the first build imports the weights: not part of any trial
    speakers, (k, n_val, n_query) = 2, clips
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_clips(Path(tmp), speakers, k + n_val + n_query, seconds)
        eps = episodes(speakers, k, n_val, n_query, trials)
        factory = lambda: build_backbone(backbone)  # noqa: E731
        inputs = AudioInputs(factory, paths, max_seconds=seconds)
        audio = FullFinetune(inputs, dataclasses.replace(cfg, trunk_cache_mb=0), device=device)
        audio_s, audio_logits = _time(audio, eps)
        cached = FullFinetune(inputs, cfg, device=device)
        cached_s, cached_logits = _time(cached, eps)
        flops = [step_flops(adapter, eps[0]) for adapter in (audio, cached)]
    gap = max(float((a - b).abs().max()) for a, b in zip(audio_logits, cached_logits, strict=True))
    warm = cached_s[1:] or cached_s
    return {"backbone": f"{backbone.family}:{backbone.source}", "trainable_layers": cfg.trainable_layers,
            "device": device, "trials": trials, "clip_seconds": seconds,
            "support_val_query_clips": [WAYS * k, WAYS * n_val, WAYS * n_query],
            "from_audio_s_per_trial": round(float(np.mean(audio_s)), 2),
            "cached_first_trial_s": round(cached_s[0], 2), "cached_s_per_later_trial": round(float(np.mean(warm)), 2),
            "from_audio_trials_per_min": round(60 / float(np.mean(audio_s)), 2),
            "cached_trials_per_min": round(60 * len(cached_s) / sum(cached_s), 2),
            "speedup_all_trials": round(sum(audio_s) / sum(cached_s), 1),
            "speedup_later_trials": round(float(np.mean(audio_s[1:] or audio_s)) / float(np.mean(warm)), 1),
            "train_step_flop_ratio": round(flops[0][0] / flops[1][0], 2),
            "eval_batch_flop_ratio": round(flops[0][1] / flops[1][1], 2),
            "clips_through_trunk": cached.trunks.computed if cached.trunks else 0,
            "max_query_logit_gap": gap}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--backbone", default="default", help="backbone source (default: Whisper base)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    print(json.dumps(run(args.quick, args.device, BackboneConfig(source=args.backbone), args.trials), indent=1))


if __name__ == "__main__":
    main()
