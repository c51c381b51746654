"""Every preset and tuned overlay is package data: found through importlib.resources, matched by the wheel's
package-data globs, and loadable (a preset with its overlay resolved)."""

from __future__ import annotations

import fnmatch
import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path

import pytest

from metalearn.configs.load import load_config
from metalearn.configs.overlay import read_overlay

ROOT = Path(__file__).resolve().parents[1]
PRESETS = resources.files("metalearn.configs") / "presets"
PAPER_ROOTS = {"paper_a": [f"data.{k}.root=/x" for k in ("target", "sources.iemocap", "sources.msp_improv",
                                                          "sources.mandarin_affective", "sources.msp_podcast")],
               "paper_b": ["data.target.root=/x"]}


def shipped() -> list[str]:
    """Every YAML file under the package's presets folder, relative to ``metalearn/configs``."""
    folder = Path(str(PRESETS))
    return sorted(str(p.relative_to(folder.parent)) for p in folder.rglob("*.yaml"))


def test_every_preset_file_is_in_the_wheel_package_data() -> None:
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    mine = globs["metalearn.configs"]
    files = shipped()
    assert "presets/demo.yaml" in files and "presets/tuned/demo.yaml" in files
    left_out = [f for f in files if not any(fnmatch.fnmatch(f, g) and f.count("/") == g.count("/") for g in mine)]
    assert left_out == []


@pytest.mark.parametrize("name", [p.removeprefix("presets/").removesuffix(".yaml") for p in shipped()
                                  if p.count("/") == 1])
def test_each_installed_preset_loads_with_its_overlay(name: str) -> None:
    cfg = load_config(name, PAPER_ROOTS.get(name, []))
    tuned = getattr(cfg, "tuned", None)
    if tuned is not None and tuned.file:
        assert tuned.folds, f"{name}: tuned.file={tuned.file} was not read"


@pytest.mark.parametrize("name", [p for p in shipped() if p.startswith("presets/tuned/")])
def test_each_tuned_overlay_reads(name: str) -> None:
    assert read_overlay(Path(str(PRESETS.parent)) / name)


def test_print_config_shows_the_tuned_values_and_writes_nothing(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "metalearn", "run", "--config", "demo", "--print-config",
                          f"out={tmp_path / 'run'}"], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert "file: tuned/demo" in out.stdout and "meta_steps:" in out.stdout
    assert not any(tmp_path.iterdir())
