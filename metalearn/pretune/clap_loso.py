"""GEmo-CLAP's IEMOCAP protocol over cached audio embeddings: leave-one-session-out, WA and UA per fold.

For each held-out session, the CLAP heads (audio projection, text projection, logit scales) are trained on
the other sessions' utterances with one loss variant (Emo-CLAP, ML- or SL-GEmo-CLAP), early-stopped on the
zero-shot UA of a seeded dev share of those sessions, and the held-out session is classified zero-shot
(nearest class prompt). The audio encoder is frozen here: its mean-pooled states come from the embedding
cache, so a fold trains in seconds on a CPU; GEmo-CLAP fine-tunes the encoder too (``clap_train`` does
that, from audio). WA = accuracy, UA = mean per-class recall, as in the paper.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from metalearn.errors import MetalearnError
from metalearn.manifest import Utterance
from metalearn.pretune.clap_heads import ClapHeadsConfig, dev_split, scores, train_heads
from metalearn.pretune.clap_model import ClapConfig, ClapModel

IEMOCAP4 = ("neutral", "happy", "angry", "sad")  # happy includes excited (the canonical label map merges them)


@dataclasses.dataclass
class LosoConfig:
    """The heads' training per fold; ``alphas`` gives each loss variant's alpha (emotion weight)."""

    variants: list[str] = dataclasses.field(default_factory=lambda: ["emo", "ml", "sl"])
    alphas: dict[str, float] = dataclasses.field(default_factory=lambda: {"emo": 1.0, "ml": 0.9, "sl": 0.8})
    classes: list[str] = dataclasses.field(default_factory=lambda: list(IEMOCAP4))
    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-3
    eval_every: int = 25
    dev_fraction: float = 0.1
    seed: int = 0
    text_source: str = "default"
    embed_dim: int = 128
    prompt: str = "emotion is {label}"


def session(u: Utterance) -> str:
    """IEMOCAP's session of an utterance: ``Ses01`` from speaker ``Ses01F``."""
    if not u.speaker.startswith("Ses") or len(u.speaker) < 5:
        raise MetalearnError(f"{u.path}: speaker {u.speaker!r} does not name an IEMOCAP session (SesNN...)")
    return u.speaker[:5]


def run_loso(rows: Sequence[Utterance], x: Tensor, cfg: LosoConfig, backbone) -> list[dict]:
    """One record per (variant, held-out session): WA, UA, test size, the dev-selected step.

    ``rows`` and ``x`` [N, D] (pooled audio features) are aligned; rows outside ``cfg.classes`` are dropped.
    ``backbone`` only sizes the audio projection (its features come from ``x``).
    """
    keep = [i for i, u in enumerate(rows) if u.emotion in cfg.classes]
    rows, x = [rows[i] for i in keep], x[keep]
    sessions = sorted({session(u) for u in rows})
    if len(sessions) < 2:
        raise MetalearnError(f"leave-one-session-out needs >= 2 sessions, found {sessions}")
    y = torch.tensor([cfg.classes.index(u.emotion) for u in rows])
    records = []
    for variant in cfg.variants:
        for held in sessions:
            test = np.array([i for i, u in enumerate(rows) if session(u) == held])
            rest = np.array([i for i, u in enumerate(rows) if session(u) != held])
            dev_at, train_at = dev_split(len(rest), cfg.dev_fraction, cfg.seed)
            dev, train = rest[dev_at], rest[train_at]
            torch.manual_seed(cfg.seed)
            model = ClapModel(backbone, ClapConfig(text_source=cfg.text_source, embed_dim=cfg.embed_dim,
                                                   prompt=cfg.prompt, variant=variant, alpha=cfg.alphas[variant]))
            step, dev_scores = train_heads(model, x[train], [rows[i].emotion for i in train],
                                           [rows[i].gender for i in train], x[dev], y[dev], cfg.classes,
                                           ClapHeadsConfig(cfg.steps, cfg.batch_size, cfg.lr, cfg.eval_every,
                                                           cfg.dev_fraction, cfg.seed))
            with torch.no_grad():
                test_scores = scores(model.zero_shot_logits(x[test], cfg.classes), y[test], len(cfg.classes))
            records.append({"variant": variant, "session": held, **test_scores, "n_test": len(test),
                            "best_step": step, "dev_ua": dev_scores["ua"]})
    return records


NAMES = {"clip": "CLIP targets", "emo": "Emo-CLAP", "ml": "ML-GEmo-CLAP", "sl": "SL-GEmo-CLAP"}


def loso_table(records: Sequence[dict]) -> str:
    """The paper's layout: one row per method, WA and UA (%) per held-out session, then their mean."""
    sessions = sorted({r["session"] for r in records})
    head = "| method | " + " | ".join(f"{s} WA | {s} UA" for s in sessions) + " | mean WA | mean UA |"
    lines = [head, "|:--|" + "--:|" * (2 * len(sessions) + 2)]
    for variant in dict.fromkeys(r["variant"] for r in records):
        by = {r["session"]: r for r in records if r["variant"] == variant}
        cells = [f"{100 * by[s]['wa']:.1f} | {100 * by[s]['ua']:.1f}" for s in sessions]
        mean_wa = 100 * np.mean([by[s]["wa"] for s in sessions])
        mean_ua = 100 * np.mean([by[s]["ua"] for s in sessions])
        lines.append(f"| {NAMES.get(variant, variant)} | " + " | ".join(cells) + f" | {mean_wa:.1f} | {mean_ua:.1f} |")
    return "\n".join(lines)
