"""Benchmark: embedding one corpus with several pretune variants, one by one versus sharing their frozen trunk.

    python experiments/bench_shared_extract.py [--variants runs/demo/pretune/*] [--n 240]

Run after `make demo` (it uses the demo's variants: none and three variants that trained the top two
of Whisper base's six layers). Both ways fill empty caches in a temporary folder from the same clips;
they alternate, twice each, and the best pass of each is kept. Checks that both give the same
embeddings, and writes results/bench_shared_extract.{json,md}.
"""

from __future__ import annotations

import argparse
import glob
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from metalearn.data.manifest import read_manifest
from metalearn.features.embeddings import EmbeddingConfig, extract
from metalearn.features.shared_trunk import shared_layers
from metalearn.pretune.subsets import backbone_for_variant

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: extract_variants lives in tests/
from tests.reference_impls import extract_variants  # noqa: E402


def timed(fn) -> tuple[float, list]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--manifest", default="data/demo/manifests/esd.csv")
    p.add_argument("--variants", nargs="+", default=sorted(glob.glob("runs/demo/pretune/*")))
    p.add_argument("--n", type=int, default=240, help="utterances (the first n, in manifest order)")
    p.add_argument("--out", default="results/bench_shared_extract")
    args = p.parse_args()
    rows = read_manifest(args.manifest)[: args.n]
    backbones = [backbone_for_variant(v) for v in args.variants]
    depth = min(shared_layers(backbones[0], b) for b in backbones[1:])
    audio_s = sum(u.duration_s for u in rows)
    times: dict[str, list[float]] = {"one by one": [], "shared trunk": []}
    for _ in range(2):
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            t, alone = timed(lambda a=a: [extract(rows, bb, EmbeddingConfig(cache_dir=a)) for bb in backbones])
            times["one by one"].append(t)
            t, shared = timed(lambda b=b: extract_variants(rows, backbones, EmbeddingConfig(cache_dir=b)))
            times["shared trunk"].append(t)
    diff = max(float(np.abs(x.values - y.values).max()) for x, y in zip(alone, shared, strict=True))
    best = {k: min(v) for k, v in times.items()}
    result = {"clips": len(rows), "audio_seconds": audio_s, "variants": [Path(v).name for v in args.variants],
              "shared_layers": depth, "layers": backbones[0].num_states - 1, "seconds": best,
              "speedup": best["one by one"] / best["shared trunk"], "max_abs_difference": diff,
              "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
              "command": " ".join(sys.argv)}
    lines = [f"# Embedding with {len(backbones)} variants: one by one vs shared trunk", "",
             f"`python {' '.join(sys.argv)}`: {len(rows)} clips, {audio_s:.0f} s of audio, "
             f"{depth} of {result['layers']} layers shared, {result['threads']} threads, best of 2 passes each.", "",
             "| way | seconds | audio seconds per second (all variants) |", "|---|---|---|"]
    lines += [f"| {k} | {v:.1f} | {audio_s * len(backbones) / v:.0f} |" for k, v in best.items()]
    lines += ["", f"Speedup {result['speedup']:.2f}x; largest difference between the two ways' embeddings: {diff:.1e}."]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(result, indent=1) + "\n")
    Path(f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
