"""The published numbers the leave-one-session-out table is read against (``table.md`` shows them beside
the run's rows): GEmo-CLAP's headline and frozen-feature baselines on the real IEMOCAP, 4 classes
(neutral, happy + excited, angry, sad), 5-fold leave-one-session-out. Never run here: quoted from the papers."""

from __future__ import annotations

from metalearn.util import markdown

GEMO_CLAP = 'Pan et al., "GEmo-CLAP", ICASSP 2024 (arXiv 2306.07848)'
EMOTION2VEC = 'Ma et al., "emotion2vec", 2023 (arXiv 2312.15185)'

# (row label, method, backbone, WA %, UA % or None, source)
PAPER_ROWS = (
    ("paper", "SL-GEmo-CLAP", "WavLM (fine-tuned)", "83.16", "81.43", GEMO_CLAP),
    ("reference", "frozen features + linear head", "wav2vec2-base", "63.4", None, EMOTION2VEC),
    ("reference", "frozen features + linear head", "WavLM-base", "65.9", None, EMOTION2VEC),
    ("reference", "frozen features + linear head", "emotion2vec", "71.8", None, EMOTION2VEC),
)


def paper_table() -> list[str]:
    """The published rows as a Markdown paragraph and table (labelled: the papers' numbers, not run here)."""
    body = [[label, method, backbone, wa, ua or "–", source] for label, method, backbone, wa, ua, source in PAPER_ROWS]
    L, R = markdown.LEFT, markdown.RIGHT
    return ["Published numbers to read this run's table against (real IEMOCAP, 4 classes, leave-one-session-out; "
            "quoted from the papers, not run here; `paper` = the GEmo-CLAP paper's own headline, WavLM backbone):",
            "\n".join(markdown.table(["row", "method", "backbone", "WA", "UA", "source"], body,
                                     [L, L, L, R, R, L])),
            "This run:"]
