"""The package installs and works from outside the repository (slow: a venv, a pip install, the example).

Offline and within minutes: the fresh venv (no pip of its own) sees the test venv's dependencies, pip and
setuptools included, through a ``.pth`` line, and installs the package itself with ``--no-deps
--no-build-isolation`` from a copy of the tree (the full ``pip install . -c constraints.txt``, dependencies
included, is the same step with network: see the README). Then, from an empty folder: the ``metalearn``
console script, the presets shipped inside the package, and ``examples/quickstart.py --tiny``.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Top-level folders of a working copy that are not the package's source (data, caches, results, venvs).
LOCAL = {".venv", ".git", "data", "cache", "runs", "results", "experiments", "wandb", ".locks", "build"}


def _copy_tree(dest: Path) -> Path:
    """The repository's files without its local data, caches and venv (what ``pip install .`` reads)."""
    def ignore(folder: str, names: list[str]) -> set[str]:
        top = Path(folder).resolve() == REPO
        return {n for n in names if (top and n in LOCAL) or n in ("__pycache__", ".pytest_cache", ".ruff_cache")
                or n.endswith(".egg-info")}

    return Path(shutil.copytree(REPO, dest, ignore=ignore))


def _run(argv: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(argv)}: rc {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.slow
def test_installed_package_runs_from_outside_the_repository(tmp_path: Path) -> None:
    src = _copy_tree(tmp_path / "src")
    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    _run([base, "-m", "venv", "--without-pip", str(venv)], tmp_path)  # pip and setuptools come from the .pth
    python = venv / "bin" / "python"
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                   tmp_path).stdout.strip()
    deps = [p for p in (sysconfig.get_paths()["purelib"], *site.getsitepackages()) if Path(p).is_dir()]
    (Path(purelib) / "test_dependencies.pth").write_text("\n".join(dict.fromkeys(deps)) + "\n")
    _run([str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", str(src)], tmp_path)

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    helped = _run([str(venv / "bin" / "metalearn"), "--help"], outside).stdout
    assert "export-variant" in helped and "run" in helped
    where = _run([str(python), "-c", "import metalearn; from metalearn.configs.load import preset_path; "
                  "print(metalearn.__file__); print(preset_path('demo'))"], outside).stdout.split()
    assert all(Path(p).is_relative_to(venv) for p in where), where  # the installed copy, its shipped presets
    out = _run([str(python), str(src / "examples" / "quickstart.py"), "--work", "qs", "--tiny"], outside).stdout
    assert "trials in qs/results" in out and "query accuracy 1.00" in out
    assert (outside / "qs" / "results" / "summary.csv").is_file()
