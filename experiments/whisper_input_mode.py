"""Whisper's input for embeddings: the utterance's own frames ("trimmed") or 30 s windows ("window").

    python experiments/whisper_input_mode.py [--manifest data/demo/manifests/esd.csv] [--speakers 4]

On the first speakers of the target corpus (their test split plus 10 train clips per emotion),
extracts both kinds of embeddings (cached) and scores each layer with the calibration classifiers
(speaker-independent LDA, per-speaker k-shot LDA with adapted means), and times both modes.
Writes results/whisper_input_mode.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from metalearn.data.manifest import read_manifest
from metalearn.data.synth.calibration import CalibrationData, calibrate
from metalearn.features.backbones import BackboneConfig, build_backbone
from metalearn.features.embeddings import EmbeddingConfig, extract


def subset(rows, n_speakers: int, train_per_class: int):
    speakers = sorted({u.speaker for u in rows})[:n_speakers]
    kept, count = [], defaultdict(int)
    for u in rows:
        if u.speaker not in speakers or u.split == "evaluation":
            continue
        if u.split == "train":
            count[(u.speaker, u.emotion)] += 1
            if count[(u.speaker, u.emotion)] > train_per_class:
                continue
        kept.append(u)
    return kept


def score(values: np.ndarray, rows) -> dict:
    emotions = sorted({u.emotion for u in rows})
    y = np.array([emotions.index(u.emotion) for u in rows])
    spk, split = np.array([u.speaker for u in rows]), np.array([u.split for u in rows])
    per_layer = {}
    for layer in range(values.shape[1]):
        r = calibrate(CalibrationData(values[:, layer], y, spk, split), ks=(1, 5), repeats=10)
        per_layer[layer] = {"speaker_independent": r["speaker_independent"][0],
                            "kshot_1": r["per_speaker_kshot"]["1"][0], "kshot_5": r["per_speaker_kshot"]["5"][0]}
    return per_layer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--manifest", default="data/demo/manifests/esd.csv")
    p.add_argument("--speakers", type=int, default=4)
    p.add_argument("--source", default="default")
    p.add_argument("--cache-dir", default="cache/embeddings")
    p.add_argument("--out", default="results/whisper_input_mode")
    args = p.parse_args()
    rows = subset(read_manifest(args.manifest), args.speakers, train_per_class=10)
    audio_s = sum(u.duration_s for u in rows)
    result = {"command": "python " + " ".join(sys.argv), "utterances": len(rows), "audio_seconds": round(audio_s)}
    for mode in ("trimmed", "window"):
        backbone = build_backbone(BackboneConfig("whisper", args.source, mode))
        t = time.perf_counter()
        emb = extract(rows, backbone, EmbeddingConfig(cache_dir=args.cache_dir))
        seconds = time.perf_counter() - t
        result[mode] = {"extract_seconds": round(seconds, 1), "cached": emb.stats["cached"],
                        "audio_s_per_s": round(audio_s / seconds, 1) if emb.stats["extracted"] else None,
                        "layers": score(emb.values, emb.rows)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    lines = ["# Whisper input mode: trimmed vs 30 s windows", "", f"`{result['command']}`", "",
             f"{result['utterances']} utterances ({result['audio_seconds']} s of audio), chance 20%.", "",
             "| layer | SI trimmed | SI window | k=1 trimmed | k=1 window | k=5 trimmed | k=5 window |",
             "|---|---|---|---|---|---|---|"]
    for layer in result["trimmed"]["layers"]:
        t, w = result["trimmed"]["layers"][layer], result["window"]["layers"][layer]
        lines.append(f"| {layer} | " + " | ".join(
            f"{100 * a[k]:.1f} | {100 * b[k]:.1f}" for a, b, k in
            [(t, w, "speaker_independent"), (t, w, "kshot_1"), (t, w, "kshot_5")]) + " |")
    lines += ["", "| mode | audio seconds per second (extraction, 2 CPU threads) |", "|---|---|"]
    lines += [f"| {m} | {result[m]['audio_s_per_s']} |" for m in ("trimmed", "window")]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
