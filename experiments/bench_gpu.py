"""GPU benchmark: extraction (fp32, bf16), pre-finetuning steps/s, full-backbone fine-tuning trials/min, the grid.

    python experiments/bench_gpu.py [--device cuda] [--backbone default] [--variants 16]
    python experiments/bench_gpu.py --device cpu --tiny      # the logic in seconds (tests/test_bench_scripts.py)

One prepared run of a few minutes on a machine with everything installed (no network: the default backbone,
Whisper base, is imported from the installed packages; ``--backbone`` takes a local folder too):

- extraction: the backbone's forward on padded batches of 5 s clips, every hidden state, fp32 and bf16
  autocast: clips per second, audio seconds per second, and the largest pooled-embedding gap bf16 vs fp32;
- pre-finetuning: optimizer steps per second of ``metalearn.pretune.train.train_epoch`` (MultiHeadClassifier,
  AdamW, batch 8 of 3 s crops, the whole backbone and the top 2 layers), fp32 and bf16;
- full-backbone fine-tuning: trials per minute from audio and on the cached trunk (bench_trunk.py);
- full-backbone fine-tuning batched across episodes (bench_fullft.py) at wav2vec2-base's layer shapes (768 wide,
  12 heads, FFN 3072, 12 layers; random weights in a Whisper encoder, whose trunk the batched path caches), the
  top layer trainable: seconds per trial one at a time and ``--per-pass`` at a time, the episodes per pass that
  would fit an 80 GB card (from the peak memory measured) and the GPU-hours of Paper A's 33,600 trials either way;
- the grid: Paper A's 33,600 head fine-tuning trials through the engine (bench_trials.py's grid) on the device.

Writes results/bench_gpu.{json,md} (``--out``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import bench_fullft
import bench_trials
import bench_trunk
import torch

from metalearn.features.backbones import BackboneConfig, build_backbone, pad_batch
from metalearn.features.backbones.pooling import masked_mean
from metalearn.features.backbones.whisper import whisper_from_config
from metalearn.pretune.config import PretuneConfig
from metalearn.pretune.model import MultiHeadClassifier, freeze_all_but_top
from metalearn.pretune.train import TrainLoop, train_epoch
from metalearn.util.devices import autocast

SR = 16_000
PAPER_A_TRIALS = 33_600
W2V2_BASE_SHAPES = {"d_model": 768, "encoder_layers": 12, "encoder_attention_heads": 12, "encoder_ffn_dim": 3072}
TINY_SHAPES = {"d_model": 32, "encoder_layers": 2, "encoder_attention_heads": 2, "encoder_ffn_dim": 64}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _clips(n: int, seconds: float, seed: int = 0) -> list[torch.Tensor]:
    """``n`` noisy tone clips of 60-100 % of ``seconds`` (unequal lengths: padded batches)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        t = torch.arange(int(seconds * SR * (0.6 + 0.4 * (i % 5) / 4))) / SR
        out.append(0.4 * torch.sin(2 * torch.pi * 220 * (1 + i % 7) * t) + 0.05 * torch.randn(t.shape, generator=g))
    return out


@torch.inference_mode()
def extraction(backbone_cfg: BackboneConfig, device: torch.device, clips: int, seconds: float, batch: int) -> dict:
    """Forward throughput at fp32 and bf16 autocast, and the bf16 pooled-embedding gap to fp32."""
    model = build_backbone(backbone_cfg).to(device).eval()
    waves, out, pooled = _clips(clips, seconds), {}, {}
    for precision in ("fp32", "bf16"):
        def run(precision=precision) -> list[torch.Tensor]:
            got = []
            for i in range(0, len(waves), batch):
                x, lengths = pad_batch(waves[i : i + batch])
                with autocast(device, precision):
                    states = model(x.to(device), lengths.to(device))
                got.append(masked_mean(states.hidden_states[-1].float(), states.lengths.to(device)))
            _sync(device)
            return got
        run()  # warm-up (kernels, allocator)
        start = time.perf_counter()
        pooled[precision] = torch.cat(run())
        seconds_taken = time.perf_counter() - start
        audio = sum(w.numel() for w in waves) / SR
        out[precision] = {"clips_per_s": round(clips / seconds_taken, 1),
                          "audio_s_per_s": round(audio / seconds_taken, 1)}
    out["bf16_max_pooled_gap"] = float((pooled["bf16"] - pooled["fp32"]).abs().max())
    out["bf16_speedup"] = round(out["bf16"]["clips_per_s"] / out["fp32"]["clips_per_s"], 2)
    return out


def _batches(batch: int, seconds: float, classes: int) -> Iterator:
    """Endless (waves [b, T], lengths [b], labels [b], corpus) like pretune.train.train_batches."""
    i = 0
    while True:
        waves, lengths = pad_batch(_clips(batch, seconds, seed=i))
        yield waves, lengths, torch.arange(i, i + batch) % classes, "bench"
        i += batch


def pretune_steps(backbone_cfg: BackboneConfig, device: torch.device, steps: int, batch: int,
                  seconds: float) -> dict:
    """Optimizer steps per second of pre-finetuning (whole backbone, top 2 layers) at fp32 and bf16."""
    out = {}
    for trainable in (None, 2):
        for precision in ("fp32", "bf16"):
            cfg = PretuneConfig(batch_size=batch, grad_accum=1, precision=precision, trainable_layers=trainable,
                                max_seconds=seconds, lr=1e-5)
            net = MultiHeadClassifier(build_backbone(backbone_cfg), {"bench": tuple("abcd")}).to(device)
            freeze_all_but_top(net.backbone, trainable)
            net.train()
            opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=cfg.lr)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
            scaler = torch.amp.GradScaler(device.type, enabled=False)
            batches = _batches(batch, seconds, 4)
            args = (net, TrainLoop(opt, sched, scaler, batches, {"bench": 4}, steps), cfg, device)
            train_epoch(*args, 1)  # warm-up
            _sync(device)
            start = time.perf_counter()
            train_epoch(*args, steps)
            _sync(device)
            key = f"{'all_layers' if trainable is None else f'top_{trainable}'}_{precision}"
            out[key] = {"steps_per_s": round(steps / (time.perf_counter() - start), 2)}
    return out


def batched_fullft(device: torch.device, per_pass: int, tiny: bool) -> dict:
    """bench_fullft's comparison on a random encoder of wav2vec2-base's shapes (``tiny``: a 32-wide one), the
    last state read, its layer trainable; plus the episodes per pass fitting 80 GB and Paper A's GPU-hours."""
    shapes = TINY_SHAPES if tiny else W2V2_BASE_SHAPES
    config = {**shapes, "decoder_layers": 1, "decoder_attention_heads": shapes["encoder_attention_heads"],
              "decoder_ffn_dim": shapes["encoder_ffn_dim"], "num_mel_bins": 80, "max_source_positions": 1500}
    torch.manual_seed(0)
    model = whisper_from_config(config).eval()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    out = bench_fullft.run(trials=2 if tiny else 2 * per_pass, per_pass=per_pass, steps=2 if tiny else None,
                           device=str(device), layer=shapes["encoder_layers"], seconds=0.5 if tiny else 3.0,
                           clips=(1, 1, 1) if tiny else (5, 2, 3), peak=False, factory=lambda: model)
    out["backbone"] = "whisper:random (wav2vec2-base shapes)" if not tiny else "whisper:random (tiny)"
    if "max_memory_allocated_gb" in out:  # the pass's peak, backbone and trunk cache included: an upper bound
        out["episodes_per_pass_fitting_80gb"] = int(per_pass * 75 / max(out["max_memory_allocated_gb"], 1e-9))
    out["paper_a_trials"] = PAPER_A_TRIALS
    out["paper_a_gpu_hours_per_trial_path"] = round(PAPER_A_TRIALS * out["per_trial_s_per_trial"] / 3600, 2)
    out["paper_a_gpu_hours_batched"] = round(PAPER_A_TRIALS * out["batched_s_per_trial"] / 3600, 2)
    return out


def markdown(result: dict) -> str:
    lines = ["# GPU benchmark", "", f"`{result['command']}` on {result['device_name']} (torch {result['torch']})", ""]
    for part, value in result.items():
        if isinstance(value, dict):
            lines += [f"## {part}", "", "| measure | value |", "|---|---|"]
            lines += [f"| {k} | {v} |" for k, v in value.items()] + [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--backbone", default="default", help="backbone source (default: Whisper base)")
    p.add_argument("--variants", type=int, default=16, help="grid variants (16 = 33,600 trials)")
    p.add_argument("--per-pass", type=int, default=32, help="episodes per pass of the batched fine-tuning")
    p.add_argument("--tiny", action="store_true", help="tiny random backbone, a few clips and steps (logic only)")
    p.add_argument("--out", default="results/bench_gpu")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    backbone = BackboneConfig(family="whisper", source="tiny" if args.tiny else args.backbone)
    tiny = args.tiny
    clips, steps, speakers, trials, seconds = (4, 1, 1, 2, 0.5) if tiny else (128, 20, 20, 3, 5.0)
    given = argv if argv is not None else sys.argv[1:]
    result: dict = {"command": "python experiments/bench_gpu.py " + " ".join(given), "torch": torch.__version__,
                    "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
    result["extraction"] = extraction(backbone, device, clips, seconds, 16)
    result["pretune"] = pretune_steps(backbone, device, steps, 2 if tiny else 8, min(seconds, 3.0))
    ff_cfg = dataclasses.replace(bench_trunk.DEMO, steps=2, eval_every=1) if tiny else bench_trunk.DEMO
    result["full_finetune"] = bench_trunk.run(device=args.device, backbone=backbone, trials=trials, cfg=ff_cfg,
                                              seconds=min(seconds, 3.0), clips=(1, 1, 1) if tiny else (5, 2, 3))
    result["fullft_batched"] = batched_fullft(device, 2 if tiny else args.per_pass, tiny)
    result["grid"] = bench_trials.grid(1 if tiny else args.variants, 2 if tiny else 16, speakers,
                                       device=args.device, ks=(2,) if tiny else bench_trials.KS,
                                       steps=10 if tiny else 100)
    if device.type == "cuda":
        result["cuda"] = {"max_memory_allocated_gb": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
