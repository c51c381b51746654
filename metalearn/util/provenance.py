"""Where a result came from: the package version, the git commit (and whether the tree was dirty, or
"installed" outside a checkout), Python and key package versions, the command line, threads and device."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

RESULTS = "results"  # the committed outputs: their changes do not make a tree dirty
ALLOW_DIRTY = "METALEARN_ALLOW_DIRTY"
PACKAGES = ("torch", "numpy", "scipy", "transformers", "wandb", "omegaconf", "optuna", "submitit")


def git_commit(root: str | os.PathLike | None = None) -> str:
    """The checkout's commit, with ``-dirty`` when tracked files outside ``results/`` changed (results are what
    runs write, not what made them); ``installed`` when the package is not inside a git checkout (an installed
    wheel); ``unknown`` when git cannot tell."""
    cwd = str(root or Path(__file__).resolve().parent)
    try:
        inside = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=cwd, capture_output=True,
                                text=True, timeout=10)
        if inside.returncode != 0:
            return "installed"
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=cwd, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", f":!{RESULTS}"],
                               cwd=top, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def refuse_dirty_results(out: str | os.PathLike) -> None:
    """Refuse to write into a committed results folder (tracked by git) from a dirty tree: committed results come
    from a clean tree of a named commit. ``METALEARN_ALLOW_DIRTY=1`` says to write anyway (run.json says dirty)."""
    from metalearn.util.errors import MetalearnError

    out = Path(out).resolve()
    if os.environ.get(ALLOW_DIRTY) == "1" or not out.is_dir():
        return
    try:
        tracked = subprocess.run(["git", "ls-files", "--", "."], cwd=out, capture_output=True, text=True,
                                 timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return
    commit = git_commit(out)
    if tracked and commit.endswith("-dirty"):
        raise MetalearnError(f"{out} holds committed results and the tree has uncommitted changes ({commit}): "
                             f"commit first (committed results come from a clean tree), write elsewhere with "
                             f"out=..., or set {ALLOW_DIRTY}=1")


def versions() -> dict[str, str]:
    """Installed version of each of :data:`PACKAGES` ("absent" when not installed)."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def provenance(device: str, **extra: object) -> dict:
    """What ``run.json`` records: versions, commit, command line, threads, device, start time, and ``extra``."""
    import torch

    from metalearn import __version__

    commit = git_commit()
    return {"package": __version__, "git_commit": commit, "dirty": commit.endswith("-dirty"),
            "python": platform.python_version(), "versions": versions(), "command": [Path(sys.argv[0]).name,
            *sys.argv[1:]], "threads": torch.get_num_threads(), "device": device, "started": time.time(), **extra}
