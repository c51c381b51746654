"""Pre-finetuning optimizer steps per second: from audio, on the cached frozen trunk padded, and packed, one run.

    python experiments/bench_pretune.py [--steps 20] [--set layer=1 trainable_layers=1 ...]

The demo's pre-finetuning sources (data/demo/manifests/cremad.csv + iemocap.csv; ``make manifests``) and its recipe
(``cpu-small`` with sentence_disjoint off, as presets/demo.yaml sets it) with ``--set`` overrides, on the embedded
default backbone (Whisper base). The same seeded model and batch stream train three times: ``cache_trunk=false``
(every step runs the log-mel front end and every layer up to the head's state), ``cache_trunk=true
pack_clips=false`` (the frozen layers' output computed once per clip: here by the untouched pass over the training
clips that pre-finetuning makes anyway for the probe, timed apart; each batch padded to its longest clip) and
``cache_trunk=true`` (the default: the batch's clips end to end, no padded frame computed). Prints the steps per
second of each, the ratios, and the largest per-step loss gap to the from-audio run (the same curve).
"""

from __future__ import annotations

import argparse
import time

import torch

from metalearn.data.manifest import read_manifest
from metalearn.features.backbones import BackboneConfig, build_backbone
from metalearn.pretune.config import apply_overrides, preset
from metalearn.pretune.data import build_splits
from metalearn.pretune.fit import build_model
from metalearn.pretune.train import pooled_part, train_epoch, training_loop

SOURCES = ["data/demo/manifests/cremad.csv", "data/demo/manifests/iemocap.csv"]


def run(cfg, splits, backbone_cfg: BackboneConfig, steps: int, device: torch.device) -> dict:  # noqa: ANN001
    """Seconds to fill the cache (0 without one), seconds for ``steps`` optimizer steps, each step's loss."""
    backbone = build_backbone(backbone_cfg)
    torch.manual_seed(cfg.seed)
    model = build_model(tuple(sorted(splits)), splits, cfg, backbone).to(device)
    start = time.perf_counter()
    if model.trunk_cache is not None:
        pooled_part(model, splits, "train", cfg, device)
    fill = time.perf_counter() - start
    torch.manual_seed(cfg.seed)
    model.train()
    loop = training_loop(model, splits, cfg, device)
    losses, start = [], time.perf_counter()
    for _ in range(steps):
        losses.append(train_epoch(model, loop, cfg, device, 1))
    return {"fill": fill, "seconds": time.perf_counter() - start, "losses": losses,
            "cached": model.trunk_cache is not None}


def measure(manifests: list[str], steps: int, preset_name: str = "cpu-small", overrides: tuple[str, ...] = (),
            backbone_source: str = "default") -> dict:
    """The three modes on the same seeded model and batches: their fill and step seconds, steps per second, the
    ratios and the largest per-step loss gap (the figures ``main`` prints, for bench_trials' ``pretune`` part)."""
    cfg = apply_overrides(preset(preset_name), ["sentence_disjoint=false", *overrides, "device=cpu"])
    rows = [u for m in manifests for u in read_manifest(m)]
    splits = build_splits(rows, cfg.seed, labels=cfg.labels, split=cfg.split, sentence_disjoint=cfg.sentence_disjoint)
    backbone_cfg, device = BackboneConfig(source=backbone_source), torch.device("cpu")
    modes = (("from audio", ["cache_trunk=false"]), ("cached trunk, padded", ["pack_clips=false"]),
             ("cached trunk", []))
    out = {name: run(apply_overrides(cfg, sets), splits, backbone_cfg, steps, device) for name, sets in modes}
    a, b, c = out["from audio"], out["cached trunk, padded"], out["cached trunk"]
    return {"recipe": f"layer={cfg.layer} trainable_layers={cfg.trainable_layers} batch={cfg.batch_size}x"
                      f"{cfg.grad_accum} max_seconds={cfg.max_seconds}",
            "manifests": manifests, "steps_per_mode": steps, "threads": torch.get_num_threads(),
            **{f"{name}: {k}": round(v, 3) for name, r in out.items()
               for k, v in (("fill_s", r["fill"]), ("steps_s", r["seconds"]), ("steps_per_s", steps / r["seconds"]))},
            "speedup_cached_over_audio": round(a["seconds"] / c["seconds"], 2),
            "speedup_packed_over_padded": round(b["seconds"] / c["seconds"], 2),
            "max_per_step_loss_gap": max(abs(x - y) for r in (b, c) for x, y in zip(a["losses"], r["losses"],
                                                                                      strict=True)),
            "cache_used": b["cached"] and c["cached"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20, help="optimizer steps timed per mode")
    p.add_argument("--manifests", nargs="+", default=SOURCES)
    p.add_argument("--preset", default="cpu-small")
    p.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--backbone-source", default="default")
    args = p.parse_args()
    result = measure(args.manifests, args.steps, args.preset, tuple(args.overrides), args.backbone_source)
    for key, value in result.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
