"""run.json's provenance: versions, commit and dirty flag, command line, threads, device; "installed" outside git."""

from __future__ import annotations

import subprocess
from pathlib import Path

from metalearn.util.provenance import PACKAGES, git_commit, provenance


def test_provenance_names_everything_a_rerun_needs() -> None:
    p = provenance("cpu", shard="1/3")
    assert {"package", "git_commit", "dirty", "python", "versions", "command", "threads", "device", "started",
            "shard"} <= set(p)
    assert set(p["versions"]) == set(PACKAGES) and p["versions"]["torch"].startswith("2.")
    assert p["device"] == "cpu" and p["shard"] == "1/3" and p["threads"] >= 1
    assert p["dirty"] == p["git_commit"].endswith("-dirty")


def test_commit_outside_a_checkout_is_installed_and_inside_is_the_head(tmp_path: Path) -> None:
    assert git_commit(tmp_path) == "installed"
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "f.txt").write_text("a")
    subprocess.run([*git, "add", "f.txt"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert git_commit(repo) == head
    (repo / "f.txt").write_text("b")
    assert git_commit(repo) == head + "-dirty"
