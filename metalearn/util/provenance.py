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

PACKAGES = ("torch", "numpy", "scipy", "transformers", "wandb", "omegaconf", "optuna", "submitit")


def git_commit(root: str | os.PathLike | None = None) -> str:
    """The checkout's commit, with ``-dirty`` when tracked files changed; ``installed`` when the package is not
    inside a git checkout (an installed wheel); ``unknown`` when git cannot tell."""
    cwd = str(root or Path(__file__).resolve().parent)
    try:
        inside = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=cwd, capture_output=True,
                                text=True, timeout=10)
        if inside.returncode != 0:
            return "installed"
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


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
