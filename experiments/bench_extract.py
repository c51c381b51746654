"""Benchmark: embedding extraction, full pipeline versus the bare backbone forward, in one run.

    python experiments/bench_extract.py [--manifest data/demo/manifests/esd.csv] [--n 240]

Measures on the same utterances and the same length-sorted batches:
- bare forward: audio already in memory, only ``backbone(batch, lengths)`` timed;
- pipeline: ``metalearn.features.embeddings.extract`` into an empty cache (read, resample, forward, pool, write);
  the two alternate, twice each, and the best pass of each is kept;
- cache hit: ``extract`` again (zero forwards);
and the peak resident memory. Writes results/bench_extract.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from metalearn.data.audio import load_audio
from metalearn.data.manifest import read_manifest
from metalearn.features.backbones import BackboneConfig, build_backbone, pad_batch
from metalearn.features.embeddings import EmbeddingConfig, extract, plan_batches
from metalearn.util.devices import resolve_device


def bare_forward(backbone, waves, batches, device) -> float:
    """Seconds for the backbone forwards alone over ``batches``."""
    start = time.perf_counter()
    with torch.inference_mode():
        for b in batches:
            x, lengths = pad_batch([waves[i] for i in b])
            backbone(x.to(device), lengths.to(device))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--manifest", default="data/demo/manifests/esd.csv")
    p.add_argument("--n", type=int, default=240, help="utterances (the first n, in manifest order)")
    p.add_argument("--source", default="default")
    p.add_argument("--family", default="whisper")
    p.add_argument("--mode", default="trimmed")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="results/bench_extract")
    args = p.parse_args()
    rows = read_manifest(args.manifest)[: args.n]
    device = resolve_device(args.device)
    backbone = build_backbone(BackboneConfig(args.family, args.source, args.mode)).to(device)
    cfg = EmbeddingConfig(device=str(device))
    audio_s = sum(u.duration_s for u in rows)
    batches = plan_batches([u.duration_s for u in rows], cfg.batch_seconds, cfg.max_batch)
    waves = [torch.from_numpy(load_audio(u.path)) for u in rows]
    bare_forward(backbone, waves, batches, device)  # warm-up: every batch shape once
    bare, pipeline = [], []
    for _ in range(2):
        bare.append(bare_forward(backbone, waves, batches, device))
        with tempfile.TemporaryDirectory() as cache:
            cfg = EmbeddingConfig(cache_dir=cache, device=str(device))
            t = time.perf_counter()
            first = extract(rows, backbone, cfg)
            pipeline.append(time.perf_counter() - t)
            t = time.perf_counter()
            again = extract(rows, backbone, cfg)
            hit = time.perf_counter() - t
        assert first.stats["extracted"] == len(rows) and again.stats["extracted"] == 0
    bare, pipeline = min(bare), min(pipeline)
    result = {
        "command": "python " + " ".join(sys.argv), "backbone": backbone.name, "device": str(device),
        "cpu_threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
        "utterances": len(rows), "audio_seconds": round(audio_s, 1), "batches": len(batches),
        "bare_forward_s": round(bare, 2), "pipeline_s": round(pipeline, 2), "cache_hit_s": round(hit, 3),
        "bare_audio_s_per_s": round(audio_s / bare, 1), "pipeline_audio_s_per_s": round(audio_s / pipeline, 1),
        "pipeline_over_bare": round(pipeline / bare, 3), "cache_hit_speedup": round(pipeline / hit, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0),
    }
    if device.type == "cuda":
        result["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 0)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"# Embedding extraction benchmark\n\n`{result['command']}`\n", "| measure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in result.items() if k != "command"]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
