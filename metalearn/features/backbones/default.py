"""The embedded default backbone: OpenAI Whisper, imported once from the installed PyPI packages.

``default`` is Whisper base (encoder: 6 layers, 512-d, 20M parameters), which runs on 2 CPU cores
at the speed the demo needs; ``installed:tiny.en`` is the smaller English-only model. The import
lands in the user cache (``$METALEARN_CACHE``, else ``$XDG_CACHE_HOME/metalearn``, else
``~/.cache/metalearn``) and is reused by every later run.
"""

from __future__ import annotations

import os
from pathlib import Path

from metalearn.features.backbones.whisper_import import WHISPER_SOURCES, import_installed_whisper
from metalearn.util.errors import MetalearnError

DEFAULT_WHISPER = "base"


def cache_root() -> Path:
    """The folder for imported weights and other per-user caches."""
    if os.environ.get("METALEARN_CACHE"):
        return Path(os.environ["METALEARN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "metalearn"


def installed_whisper_dir(name: str = DEFAULT_WHISPER) -> Path:
    """A transformers folder holding Whisper ``name`` (imported on first use, then reused)."""
    if name not in WHISPER_SOURCES:
        known = ", ".join(WHISPER_SOURCES)
        raise MetalearnError(f"unknown installed Whisper {name!r}; expected one of: {known}")
    return import_installed_whisper(name, cache_root() / f"whisper-{name}")
