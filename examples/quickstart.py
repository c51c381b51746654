"""A notebook session as a script: metalearn through its public API only (``import metalearn``).

    python examples/quickstart.py --work DIR            # the demo corpora and preset (about an hour on 2 CPU cores)
    python examples/quickstart.py --work DIR --tiny     # the tiny corpus and a tiny random backbone (a minute)

Steps: make the offline synthetic corpora, load a config with overrides, run one stage then the whole grid,
read the trial records as a table, compare the methods, and call an adapter on tensors directly.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch

import metalearn

# The tiny grid: the default config (no preset), the tiny corpus, a tiny random Whisper, two k, few steps.
TINY = {"backbone.family": "whisper", "backbone.source": "tiny", "pretune.subsets": ["none"],
        "episodes.ks": [1, 2], "episodes.repetitions": 2, "speakers.folds": 2, "meta_train.steps": 3,
        "meta_train.queries": 1, "algorithms.run": ["finetune", "simpleshot", "protonet", "majority"],
        "algorithms.finetune.steps": 10}


def configure(work: Path, tiny: bool):
    """The experiment config: a preset (or the defaults) plus overrides given as a dict."""
    paths = {"out": str(work / "results"), "data.manifests_dir": str(work / "manifests"),
             "data.target.root": str(work / "data" / "esd"), "pretune.out": str(work / "pretune"),
             "embeddings.cache_dir": str(work / "cache"), "tracking.wandb": False}
    if tiny:
        return metalearn.load_config(None, {**TINY, **paths})
    sources = {f"data.sources.{c}.root": str(work / "data" / c) for c in ("iemocap", "msp_podcast")}
    return metalearn.load_config("demo", {**paths, **sources})


def print_table(rows: Sequence[dict], columns: Sequence[str]) -> None:
    """``rows`` (a list of dicts) as an aligned text table (``metalearn.to_dataframe`` gives pandas instead)."""
    cells = [[f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    for line in [list(columns), *cells]:
        print("  ".join(v.rjust(w) for v, w in zip(line, widths, strict=True)))


def adapter_on_tensors(ways: int = 3, shots: int = 2, dim: int = 16) -> float:
    """ProtoNet on one synthetic episode: support [1, W*K, D], queries near the support -> query accuracy."""
    generator = torch.Generator().manual_seed(0)
    centres = 3 * torch.randn(ways, dim, generator=generator)
    support_y = torch.arange(ways).repeat_interleave(shots)[None]                      # [1, S]
    support_x = centres[support_y] + 0.1 * torch.randn(1, ways * shots, dim, generator=generator)
    query_y = torch.arange(ways)[None]                                                  # [1, Q]
    query_x = centres[query_y] + 0.1 * torch.randn(1, ways, dim, generator=generator)
    adapter = metalearn.build_adapter("protonet", metalearn.AdapterSpec(dim=dim, ways=ways, seed=0))
    logits = adapter.predict(support_x, support_y, query_x, ways)                      # [1, Q, W]
    return float((logits.argmax(-1) == query_y).float().mean())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="metalearn-quickstart", help="folder for corpora, caches and results")
    parser.add_argument("--tiny", action="store_true", help="tiny corpus and backbone (for tests: about a minute)")
    args = parser.parse_args(argv)
    work = Path(args.work)

    corpora = metalearn.make_corpora(work / "data", preset="tiny" if args.tiny else "demo")
    print("corpora:", {name: c["utterances"] for name, c in corpora["corpora"].items()})
    cfg = configure(work, args.tiny)
    utterances = metalearn.run_experiment(cfg, stage="manifest")        # one stage: the target's manifest
    print(f"target: {len(utterances)} utterances, {len({u.speaker for u in utterances})} speakers")
    result = metalearn.run_experiment(cfg)                               # the whole grid (resumable)
    trials = metalearn.records(result)
    print(f"{len(trials)} trials in {result.out}")
    print_table(metalearn.summary(trials), ["pretune", "algorithm", "k", "n_speakers", "accuracy_mean",
                                            "accuracy_ci95"])
    rows = [r for r in metalearn.comparisons(trials, reference="finetune") if r["metric"] == "accuracy"]
    print_table(rows, ["algorithm", "reference", "k", "diff_mean", "diff_ci_low", "diff_ci_high", "p_holm"])
    print(f"protonet on a synthetic 3-way 2-shot episode: query accuracy {adapter_on_tensors():.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
