"""Benchmark: the trial engine's grid, meta-training on its roofline, and fine-tuning on a cached trunk.

    python experiments/bench_trials.py [--parts roofs,grid,meta,trunk] [--variants 16] [--threads 2]

roofs: the matrix-multiply peak (a large fp32 matmul) and the copy bandwidth, on the same threads, in the
same run as everything below (bench_roofline.py).
grid: Paper A's full grid at the paper's scale: 20 speakers x 5 emotions with ESD's split sizes
(300 train, 20 evaluation, 30 test clips each), 768-d embeddings (wav2vec2-base) with speaker-specific
class means; binary episodes for 5 targets x 7 k x 3 repetitions = 2,100 per pretune variant; each
variant gets its own embedding table, and all tables stay in memory (peak RSS reported). Head fine-tuning
(100 Adam steps, model selection by validation macro-F1 every 10 steps) through the engine, all trials
vectorised, versus the per-episode reference loop on a subset of the same episodes (same scores checked).
meta: the MAML family and Reptile, stacked path vs per-episode loop vs learn2learn (bench_meta.py).
trunk: full-backbone fine-tuning with frozen lower layers, from audio vs on the cached trunk (bench_trunk.py).
Writes results/bench_trials.{json,md}. Timings on a shared machine are noisy: compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import bench_meta
import bench_roofline
import numpy as np
import torch

from metalearn.data.manifest import Utterance, utterance_key
from metalearn.fewshot.algorithms.finetune import Finetune, FinetuneConfig
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


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def _reference(episodes, x, index_of, reference_trials: int, device: str, steps: int) -> tuple[float, int, float]:
    """(seconds per trial of the per-episode loop, trials timed, largest macro-F1 gap to the engine)."""
    subset = episodes[:: max(1, len(episodes) // reference_trials)][:reference_trials]
    start = time.perf_counter()
    ref = run_trials(Finetune(768, FinetuneConfig(steps=steps, vectorized=False), device=device), subset, x,
                     index_of, run="bench", pretune="v0", seed=0, chunk=1)
    seconds = (time.perf_counter() - start) / len(subset)
    fast = run_trials(Finetune(768, FinetuneConfig(steps=steps), device=device), subset, x, index_of, run="bench",
                      pretune="v0", seed=0)
    by_id = lambda records: sorted(records, key=lambda r: r["episode_id"])  # noqa: E731
    gap = max(abs(a["macro_f1"] - b["macro_f1"]) for a, b in zip(by_id(ref), by_id(fast), strict=True))
    return seconds, len(subset), gap


def grid(variants: int, reference_trials: int, speakers: int = 20, device: str = "cpu",
         ks: tuple[int, ...] = KS, steps: int = 100) -> dict:
    """The 33,600-trial grid (for 16 variants, every table kept in memory) with the engine; the loop on a subset.

    ``speakers``, ``ks`` and ``steps`` (Adam steps per trial) shrink it for the tests."""
    engine_s, n_trials, f1, per_variant_ms, tables = 0.0, 0, [], [], []
    rss_before = _peak_rss_mb()
    for v in range(variants):
        rows, x = paper_table(seed=v, speakers=speakers)
        tables.append(x)  # as a 16-variant run holds them
        index_of = {utterance_key(u): i for i, u in enumerate(rows)}
        episodes, skipped = binary_episodes(rows, sorted({u.speaker for u in rows}), EMOTIONS, ks, 3, seed=0)
        assert not skipped and len(episodes) == 15 * len(ks) * speakers
        start = time.perf_counter()
        records = run_trials(Finetune(768, FinetuneConfig(steps=steps), device=device), episodes, x, index_of,
                             run="bench", pretune=f"v{v}", seed=0)
        seconds = time.perf_counter() - start
        engine_s, n_trials = engine_s + seconds, n_trials + len(records)
        per_variant_ms.append(round(1000 * seconds / len(records), 2))
        f1 += [r["macro_f1"] for r in records]
        if v == 0:
            ref_s, ref_n, gap = _reference(episodes, x, index_of, reference_trials, device, steps)
    return {"trials": n_trials, "variants": variants, "engine_seconds": round(engine_s, 1),
            "engine_ms_per_trial": round(1000 * engine_s / n_trials, 2),
            "engine_ms_per_trial_by_variant": per_variant_ms,
            "reference_ms_per_trial": round(1000 * ref_s, 1), "reference_trials_timed": ref_n,
            "speedup": round(ref_s / (engine_s / n_trials), 1),
            "max_macro_f1_gap_vs_reference": gap, "macro_f1_mean": round(float(np.mean(f1)), 4),
            "tables_in_memory_mb": round(sum(t.numel() * 4 for t in tables) / 2**20),
            "peak_rss_mb": round(_peak_rss_mb()), "peak_rss_mb_before_grid": round(rss_before)}


def _meta_table(rows: list[dict]) -> list[str]:
    lines = ["| regime | backend | ms / meta-step | time / stacked | executed GFLOP/s | % of peak | "
             "dense-equivalent GFLOP/s | first meta-gradient gap to loop |", "|---|---|---|---|---|---|---|---|"]
    # % of peak: of the matmul peak measured just before the regime (shown with the regime)
    for row in rows:
        for backend in ("stacked", "loop", "learn2learn"):
            r = row.get(backend)
            if isinstance(r, str):
                lines.append(f"| {row['regime']} | {backend} | {r} | | | | | |")
            elif r is not None:
                lines.append(f"| {row['regime']} ({row['tasks']} tasks, dense {row['dense_gflop_per_step']} GFLOP, "
                             f"peak {row['peak_gflops']} GFLOP/s) "
                             f"| {backend} | {r['ms_per_step']} | {r['time_over_stacked']} | {r['executed_gflops']} "
                             f"| {r['executed_pct_of_peak']} | {r['dense_equivalent_gflops']} "
                             f"| {r.get('max_gap_to_loop', '')} |")
    return lines


def markdown(result: dict) -> str:
    lines = ["# Trial engine and meta-training benchmark", "", f"`{result['command']}` ({result['threads']} CPU "
             f"threads, torch {result['torch']}; timings on a shared machine are noisy: compare ratios within "
             "this run)", ""]
    for part, value in result.items():
        if part == "meta":
            lines += ["## meta", "", *_meta_table(value), ""]
        elif isinstance(value, dict):
            lines += [f"## {part}", "", "| measure | value |", "|---|---|"]
            lines += [f"| {k} | {v} |" for k, v in value.items()] + [""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", default="roofs,grid,meta,trunk", help="comma-separated: roofs, grid, meta, trunk")
    p.add_argument("--variants", type=int, default=16, help="pretune variants (16 = Paper A's 33,600 trials)")
    p.add_argument("--reference-trials", type=int, default=64)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--quick", action="store_true", help="fewer repeats in meta and trunk (a first look)")
    p.add_argument("--out", default="results/bench_trials")
    args = p.parse_args()
    parts = set(args.parts.split(","))
    torch.set_num_threads(args.threads)
    result: dict = {"command": "python " + " ".join(sys.argv), "threads": args.threads,
                    "machine": platform.machine(), "torch": torch.__version__,
                    "roofs": bench_roofline.roofs(args.threads)}
    if "grid" in parts:
        result["grid"] = grid(args.variants, args.reference_trials)
    if "meta" in parts:
        result["meta"] = bench_meta.run(args.quick)
    if "trunk" in parts:
        import bench_trunk
        result["trunk"] = bench_trunk.run(args.quick)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
