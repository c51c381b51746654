"""Benchmark: the trial engine's grid, meta-training on its roofline, and fine-tuning on a cached trunk.

    python experiments/bench_trials.py [--parts roofs,grid,meta,trunk,fullft] [--variants 16] [--threads 2] [--chunk N]

roofs: the matrix-multiply peak (a large fp32 matmul) and the copy bandwidth, on the same threads, in the
same run as everything below (bench_roofline.py).
grid: Paper A's full grid at the paper's scale: 20 speakers x 5 emotions with ESD's split sizes
(300 train, 20 evaluation, 30 test clips each), 768-d embeddings (wav2vec2-base) with speaker-specific
class means; binary episodes for 5 targets x 7 k x 3 repetitions = 2,100 per pretune variant; each
variant gets its own embedding table, and all tables stay in memory (peak RSS reported). Head fine-tuning
(100 Adam steps, model selection by validation macro-F1 every 10 steps) through the engine, all trials
vectorised (finetune_fast), versus, on variant 0, the per-episode reference loop on a subset of its episodes
and the autograd path the engine used before on all of them (macro-F1 compared trial by trial), and both against
the engine on the same episodes in float64 (how many trials' macro-F1 rounding moves); the share of
gathering episode tensors; the work (matmul GFLOP, cache and memory GB, see ``work``) and the floors it
implies at the roofs measured in the same run; the load average while it ran.
meta: the MAML family and Reptile, stacked path vs per-episode loop vs learn2learn (bench_meta.py).
trunk: full-backbone fine-tuning with frozen lower layers, from audio vs on the cached trunk (bench_trunk.py).
pretune: pre-finetuning steps per second at the demo's recipe and sources, from audio vs on the cached trunk
(bench_pretune.py; needs ``make manifests``).
Writes results/bench_trials.{json,md}. Timings on a shared machine are noisy: compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

from metalearn.cli import process_settings

process_settings()  # the CLI's OpenMP and malloc settings, before torch loads: the figures are the CLI's

import bench_meta  # noqa: E402
import bench_roofline  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from metalearn.data.manifest import Utterance, utterance_key  # noqa: E402
from metalearn.fewshot.algorithms.finetune import (  # noqa: E402
    Finetune,
    FinetuneConfig,
    FitInputs,
    fit_heads_autograd,
    support_standardizer,
)
from metalearn.fewshot.episodes import binary_episodes  # noqa: E402
from metalearn.fewshot.trials import TrialTags, episode_batch, group_by_shape, run_trials  # noqa: E402
from metalearn.run.config import ExperimentConfig  # noqa: E402

EMOTIONS = ("neutral", "happy", "angry", "sad", "surprise")
KS = (2, 4, 8, 16, 24, 32, 64)
CHUNK = ExperimentConfig().chunk  # episodes per engine batch, as the runner batches them


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


class AutogradFinetune(Finetune):
    """Linear-head fine-tuning as the engine ran it before finetune_fast: vmap(grad) and the batched Adam step
    on batches standardised up front (``finetune.fit_heads_autograd``), for the before/after ratio."""

    reads_rows = False  # it reads gathered batches, as the engine gave them before

    def fit(self, support_x, support_y, query_x, ways, val_x=None, val_y=None):  # noqa: ANN001, ANN201
        mean, scale = support_standardizer(support_x, support_y, self.cfg.standardize)
        init = self.initial_heads(support_x.shape[0], ways, mean, scale, support_x.dtype)
        std = lambda x: None if x is None else (x - mean) / scale  # noqa: E731
        rows = FitInputs(std(support_x), support_y, std(query_x), std(val_x), val_y)
        return fit_heads_autograd(rows, ways, self.cfg, init)


def _by_id(records: list[dict]) -> list[dict]:
    return sorted(records, key=lambda r: r["episode_id"])


def _compare(method: Finetune, episodes, x, index_of, fast: list[dict], chunk: int
             ) -> tuple[float, float, int, list[dict]]:
    """(seconds per trial of ``method`` on ``episodes``, its largest macro-F1 gap to the engine's records of the
    same episodes, how many trials differ, its records)."""
    start = time.perf_counter()
    other = run_trials(method, episodes, x, index_of, TrialTags("bench", "v0", 0), chunk=chunk)
    seconds = (time.perf_counter() - start) / len(episodes)
    return (seconds, *_differing(other, fast), other)


def _differing(records: list[dict], others: list[dict]) -> tuple[float, int]:
    """(largest macro-F1 gap, trials whose macro-F1 differs) between ``records`` and the same episodes'
    ``others``."""
    ids = {r["episode_id"] for r in records}
    gaps = [abs(a["macro_f1"] - b["macro_f1"])
            for a, b in zip(_by_id(records), _by_id([r for r in others if r["episode_id"] in ids]), strict=True)]
    return max(gaps), sum(g > 0 for g in gaps)


def _gather_seconds(episodes, x, index_of, chunk: int) -> float:
    """Seconds per trial the engine spends building batches (episode_batch as run_trials calls it for
    ``finetune``: the support gathered, validation and query rows by index, gathered later as they are scored)."""
    groups = group_by_shape(episodes, chunk)
    start = time.perf_counter()
    for group in groups:
        episode_batch(group, index_of, x, reads_rows=True)
    return (time.perf_counter() - start) / len(episodes)


def thin_product_gflops(dim: int = 768, ways: int = 1, support: int = 16, episodes: int = 32) -> float:
    """GFLOP/s of the training step's products at the grid's shapes, in cache: W head rows [E, W, D] times the
    support rows [E, D, S] and back (the two batched products of ``finetune_fast.train``; two classes train one
    row, ``train_two_classes``). Such a product reads each support float for W multiply-adds, so BLAS runs it far
    below the large-matmul peak: this is the rate the training products can reach here, measured beside the
    roofs."""
    import bench_roofline

    x, w = torch.randn(episodes, support, dim), torch.randn(episodes, ways, dim)
    g = torch.randn(episodes, support, ways)
    xt, out, grad = x.transpose(1, 2), torch.empty(episodes, ways, support), torch.empty(episodes, ways, dim)

    def step() -> None:
        for _ in range(50):
            torch.bmm(w, xt, out=out)
            torch.bmm(g.transpose(1, 2), x, out=grad)

    seconds = bench_roofline.best_seconds(step, 5)
    return 50 * 4 * episodes * support * dim * ways / seconds / 1e9


def work(episodes, steps: int, dim: int = 768, eval_every: int = 10) -> dict:
    """What the trials must move and compute at least (the engine's design: the support gathered per episode,
    validation and query rows scored once per distinct row set, from the table).

    matmul GFLOP: per step two products of one head row over the support rows (4 S D: two classes train one
    weight row, ``finetune_fast.train_two_classes``; ``training_gflop``), the validation logit differences of
    every checkpoint (2 V D per checkpoint) and the selected query logits (2 Q D W). Cache GB: the support read
    twice per step, and Adam's seven passes (read head, grad, 2 moments; write head, 2 moments) over the weight
    row and two biases. Memory GB: the support rows read from the table, written to the batch and read back;
    each distinct set of validation or query rows read from the table once (episodes that share one are scored
    from one read, ``shared_rows``).
    """
    w, ckpts = 2, len(range(eval_every, steps + 1, eval_every)) + (steps % eval_every != 0)
    s = sum(len(e.support) for e in episodes)
    v = sum(len(e.validation) for e in episodes)
    q = sum(len(e.query) for e in episodes)
    flops = steps * 4 * s * dim + 2 * v * dim * ckpts + 2 * q * dim * w
    cache = steps * (2 * s * dim * 4 + 7 * len(episodes) * (dim + 2) * 4)
    return {"matmul_gflop": flops / 1e9, "training_gflop": steps * 4 * s * dim / 1e9, "cache_gb": cache / 1e9,
            "memory_gb": (3 * s + sum(map(len, {e.validation for e in episodes} | {e.query for e in episodes})))
            * dim * 4 / 1e9}


def grid(variants: int, reference_trials: int, speakers: int = 20, device: str = "cpu",
         ks: tuple[int, ...] = KS, steps: int = 100, chunk: int = CHUNK, before_trials: int | None = None,
         compiled: bool = True) -> dict:
    """The 33,600-trial grid (for 16 variants, every table kept in memory) with the engine; on variant 0 also
    the per-episode loop (``reference_trials`` of its episodes) and the autograd path the engine used before
    (``before_trials``, None: all), with their macro-F1 gaps to the engine, and how many trials of the engine
    and of the autograd path differ from the engine run in float64.

    ``compiled``: each variant also through the compiled kernel (``finetune.kernel = "numba"``), right after the
    torch engine, for the ratio of the two in one run; its trials compared with the torch engine's and float64.

    ``speakers``, ``ks`` and ``steps`` (Adam steps per trial) shrink it for the tests; ``chunk``: episodes per
    engine batch (the runner's ``chunk``)."""
    engine_s, n_trials, f1, per_variant_ms, tables, total = 0.0, 0, [], [], [], {}
    kernel_s, kernel_ms, kernel = 0.0, [], {}
    rss_before, load_before = _peak_rss_mb(), os.getloadavg()[0]
    if compiled:  # numba's import and the kernel's first call (a compile, or loading its cache), timed apart
        start = time.perf_counter()
        _kernel_warm_up(steps)
        kernel["first_call_s (numba import, compile or cache load)"] = round(time.perf_counter() - start, 2)
    for v in range(variants):
        rows, x = paper_table(seed=v, speakers=speakers)
        tables.append(x)  # as a 16-variant run holds them
        index_of = {utterance_key(u): i for i, u in enumerate(rows)}
        episodes, skipped = binary_episodes(rows, sorted({u.speaker for u in rows}), EMOTIONS, ks, 3, seed=0)
        assert not skipped and len(episodes) == 15 * len(ks) * speakers
        start = time.perf_counter()
        records = run_trials(Finetune(768, FinetuneConfig(steps=steps), device=device), episodes, x, index_of,
                             TrialTags("bench", f"v{v}", 0), chunk=chunk)
        seconds = time.perf_counter() - start
        engine_s, n_trials = engine_s + seconds, n_trials + len(records)
        per_variant_ms.append(round(1000 * seconds / len(records), 2))
        f1 += [r["macro_f1"] for r in records]
        total = {k: total.get(k, 0) + n for k, n in work(episodes, steps).items()}
        if compiled:
            start = time.perf_counter()
            through_kernel = run_trials(Finetune(768, FinetuneConfig(steps=steps, kernel="numba"), device=device),
                                        episodes, x, index_of, TrialTags("bench", f"v{v}", 0), chunk=chunk)
            seconds = time.perf_counter() - start
            kernel_s += seconds
            kernel_ms.append(round(1000 * seconds / len(records), 2))
            if v == 0:
                kernel_records = through_kernel
        if v == 0:
            load_mid = os.getloadavg()[0]
            gather_s = _gather_seconds(episodes, x, index_of, chunk)
            subset = episodes[:: max(1, len(episodes) // reference_trials)][:reference_trials]
            ref = _compare(Finetune(768, FinetuneConfig(steps=steps, vectorized=False), device=device), subset,
                           x, index_of, records, 1)
            old = episodes if before_trials is None else episodes[:: max(1, len(episodes) // before_trials)]
            before = _compare(AutogradFinetune(768, FinetuneConfig(steps=steps), device=device), old, x,
                              index_of, records, chunk)
            exact = run_trials(Finetune(768, FinetuneConfig(steps=steps), device=device), episodes, x.double(),
                               index_of, TrialTags("bench", "v0", 0), chunk=chunk)
            off_exact = {"engine": _differing(records, exact)[1], "autograd path": _differing(before[3], exact)[1]}
            if compiled:
                kernel["trials_whose_macro_f1_differs (variant 0: from the torch engine, from float64)"] = [
                    _differing(kernel_records, records)[1], _differing(kernel_records, exact)[1]]
    per_trial = engine_s / n_trials
    if compiled:
        kernel = {"engine_seconds": round(kernel_s, 1), "engine_ms_per_trial": round(1000 * kernel_s / n_trials, 3),
                  "engine_ms_per_trial_by_variant": kernel_ms,
                  "speedup_over_the_torch_engine": round(engine_s / kernel_s, 2), **kernel}
    return {"trials": n_trials, "variants": variants, "chunk": chunk, "engine_seconds": round(engine_s, 1),
            "engine_ms_per_trial": round(1000 * per_trial, 3),
            "engine_ms_per_trial_by_variant": per_variant_ms,
            "of_which_batch_ms_per_trial (variant 0, episode_batch)": round(1000 * gather_s, 3),
            "reference_ms_per_trial": round(1000 * ref[0], 1), "reference_trials_timed": min(reference_trials,
                                                                                                len(episodes)),
            "speedup": round(ref[0] / per_trial, 1),
            "max_macro_f1_gap_vs_reference": ref[1],
            "autograd_path_ms_per_trial (before finetune_fast)": round(1000 * before[0], 2),
            "autograd_path_trials": len(old), "speedup_vs_autograd_path": round(before[0] / per_trial, 1),
            "max_macro_f1_gap_vs_autograd_path": before[1], "trials_whose_macro_f1_differs": before[2],
            "trials_whose_macro_f1_differs_from_float64 (engine, autograd path)": [off_exact["engine"],
                                                                                  off_exact["autograd path"]],
            "macro_f1_mean": round(float(np.mean(f1)), 4),
            **{k: round(n, 1) for k, n in total.items()},
            "load_average_1min (start, after variant 0, end)": [round(load_before, 2), round(load_mid, 2),
                                                                 round(os.getloadavg()[0], 2)],
            "tables_in_memory_mb": round(sum(t.numel() * 4 for t in tables) / 2**20),
            "peak_rss_mb": round(_peak_rss_mb()), "peak_rss_mb_before_grid": round(rss_before),
            **({"compiled_kernel": kernel} if compiled else {})}


def _kernel_warm_up(steps: int) -> None:
    """One tiny fit through the compiled kernel, so the grid's timing holds no import or compile."""
    Finetune(8, FinetuneConfig(steps=steps, kernel="numba")).fit(torch.randn(2, 4, 8), torch.tensor([[0, 1, 0, 1]] * 2),
                                                                  torch.randn(2, 3, 8), 2)


def floors(grid_result: dict, roofs: dict) -> dict:
    """Lower bounds on the grid's time from its work and the roofs measured in the same run, and the time its
    training products alone take at the rate such thin products reach here (``thin_product_gflops``)."""
    matmul = grid_result["matmul_gflop"] / roofs["matmul_peak_gflops"]
    memory = grid_result["memory_gb"] / roofs["copy_bandwidth_gbs"]
    thin = grid_result["training_gflop"] / roofs["thin_product_gflops"]
    kernel = grid_result.get("compiled_kernel", {}).get("engine_seconds")
    return {"floor_s_matmul_at_peak": round(matmul, 1), "floor_s_memory_at_copy_bandwidth": round(memory, 1),
            "engine_s_over_larger_floor": round(grid_result["engine_seconds"] / max(matmul, memory), 1),
            **({"compiled_kernel_engine_s_over_larger_floor": round(kernel / max(matmul, memory), 1)} if kernel
               else {}),
            "training_products_s_at_thin_product_rate": round(thin, 1),
            "engine_s_over_training_products_at_thin_rate": round(grid_result["engine_seconds"] / thin, 1) if thin
            else None}


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
    lines = ["# Trial engine and meta-training benchmark", "", f"`{result['command']}` at {result.get('commit', '?')} "
             f"({result['threads']} CPU "
             f"threads, torch {result['torch']}; timings on a shared machine are noisy: compare ratios within "
             "this run)", ""]
    for part, value in result.items():
        if part == "meta":
            lines += ["## meta", "", *_meta_table(value), ""]
        elif isinstance(value, dict):
            lines += [f"## {part}", "", "| measure | value |", "|---|---|"]
            lines += [f"| {k} | {v} |" for k, v in value.items() if not isinstance(v, dict)]
            lines += [f"| {k}: {sub} | {v} |" for k, inner in value.items() if isinstance(inner, dict)
                      for sub, v in inner.items()] + [""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", default="roofs,grid,meta,trunk",
                   help="comma-separated: roofs, grid, meta, trunk, pretune, fullft")
    p.add_argument("--variants", type=int, default=16, help="pretune variants (16 = Paper A's 33,600 trials)")
    p.add_argument("--reference-trials", type=int, default=64)
    p.add_argument("--chunk", type=int, default=CHUNK, help="episodes per engine batch (default: the runner's)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--quick", action="store_true", help="fewer repeats in meta and trunk (a first look)")
    p.add_argument("--out", default="results/bench_trials")
    args = p.parse_args()
    parts = set(args.parts.split(","))
    torch.set_num_threads(args.threads)
    from metalearn.util.provenance import git_commit

    result: dict = {"command": "python " + " ".join(sys.argv), "commit": git_commit(), "threads": args.threads,
                    "machine": platform.machine(), "torch": torch.__version__,
                    "roofs": bench_roofline.roofs(args.threads)}
    # meta before grid: after the grid's 1.6 GB of tables are freed, MAML's small allocations ran 40% slower in
    # the same process (21.4 against 15.2 ms per arithmetic-bound step, measured both ways)
    if "meta" in parts:
        result["meta"] = bench_meta.run(args.quick)
    if "grid" in parts:
        result["roofs"]["thin_product_gflops"] = round(thin_product_gflops(), 1)
        result["grid"] = grid(args.variants, args.reference_trials, chunk=args.chunk)
        result["grid"].update(floors(result["grid"], result["roofs"]))
    if "trunk" in parts:
        import bench_trunk
        result["trunk"] = bench_trunk.run(args.quick)
    if "fullft" in parts:  # backbone fine-tuning batched across episodes vs one at a time (bench_fullft.py)
        import bench_fullft
        result["fullft"] = bench_fullft.run(**({"trials": 2, "per_pass": 2, "steps": 6} if args.quick else
                                               {"trials": 4, "per_pass": 4}))
    if "pretune" in parts:  # the demo's sources: `make manifests` first
        import bench_pretune
        result["pretune"] = bench_pretune.measure(bench_pretune.SOURCES, 10 if args.quick else 20)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
