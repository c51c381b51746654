"""Where presets are found by name: first the folders of ``$METALEARN_PRESETS`` (``os.pathsep``-separated),
then the presets shipped inside the package (``metalearn/configs/presets/*.yaml``, tuned overlays under
``presets/tuned/``)."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from metalearn.util.errors import MetalearnError

PRESETS_ENV = "METALEARN_PRESETS"


def preset_dirs() -> list[Path]:
    """Where presets are searched by name, in order: ``$METALEARN_PRESETS``, then the package's own."""
    extra = [Path(d) for d in os.environ.get(PRESETS_ENV, "").split(os.pathsep) if d]
    return [*extra, Path(str(resources.files("metalearn.configs") / "presets"))]


def preset_names() -> list[str]:
    """Every preset name found on the search path."""
    return sorted({p.stem for d in preset_dirs() if d.is_dir() for p in d.glob("*.yaml")})


def preset_path(preset: str) -> Path:
    """A preset name (``demo``, ``compare``, ``paper_a``, ...) on the search path, or a path to a YAML file."""
    path = Path(preset)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise MetalearnError(f"config file {path} does not exist")
        return path
    for folder in preset_dirs():
        if (folder / f"{preset}.yaml").is_file():
            return folder / f"{preset}.yaml"
    raise MetalearnError(f"unknown preset {preset!r}; expected one of: {', '.join(preset_names())} "
                         f"(or a .yaml path; more folders: ${PRESETS_ENV})")
