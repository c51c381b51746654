"""The ``--backbone-*`` command-line options, importable without torch (parsers are built on every start).

:mod:`metalearn.features.backbones` (torch-heavy) re-exports everything here and turns parsed options into a
config (:func:`metalearn.features.backbones.backbone_config`).
"""

from __future__ import annotations

import argparse

FAMILIES = ("whisper", "wav2vec2", "wavlm", "hubert", "data2vec-audio")
WHISPER_MODES = ("trimmed", "window")


def add_backbone_args(parser: argparse.ArgumentParser) -> None:
    """The ``--backbone-*`` options every command that builds a backbone takes."""
    parser.add_argument("--backbone-family", default="whisper", choices=FAMILIES,
                        help="family (used with --backbone-source tiny; else read from the checkpoint)")
    parser.add_argument("--backbone-source", default="default",
                        help="default (Whisper base from the installed packages), installed:tiny.en, tiny, "
                             "a hub id or a local folder")
    parser.add_argument("--backbone-layers", type=int, default=None, metavar="N",
                        help="keep only the first N transformer layers (hidden states 0..N; default: all)")
    parser.add_argument("--whisper-mode", default="trimmed", choices=WHISPER_MODES,
                        help="Whisper input: the utterance's own frames, or 30 s windows")

