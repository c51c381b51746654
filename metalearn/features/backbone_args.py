"""The ``--backbone-*`` command-line options, importable without torch (parsers are built on every start).

:mod:`metalearn.features.backbones` re-exports everything here; only :func:`backbone_config`, which builds the
:class:`~metalearn.features.backbones.BackboneConfig`, imports that (torch-heavy) package, and only when called.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from metalearn.features.backbones import BackboneConfig

FAMILIES = ("whisper", "wav2vec2", "wavlm", "hubert", "data2vec-audio")
WHISPER_MODES = ("trimmed", "window")


def add_backbone_args(parser: argparse.ArgumentParser) -> None:
    """The ``--backbone-*`` options every command that builds a backbone takes."""
    parser.add_argument("--backbone-family", default="whisper", choices=FAMILIES,
                        help="family (used with --backbone-source tiny; else read from the checkpoint)")
    parser.add_argument("--backbone-source", default="default",
                        help="default (Whisper base from the installed packages), installed:tiny.en, tiny, "
                             "a hub id or a local folder")
    parser.add_argument("--whisper-mode", default="trimmed", choices=WHISPER_MODES,
                        help="Whisper input: the utterance's own frames, or 30 s windows")


def backbone_config(args: argparse.Namespace) -> BackboneConfig:
    """The :class:`BackboneConfig` of parsed ``--backbone-*`` options."""
    from metalearn.features.backbones import BackboneConfig

    return BackboneConfig(args.backbone_family, args.backbone_source, args.whisper_mode)
