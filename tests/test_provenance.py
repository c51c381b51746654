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


def test_committed_results_refuse_a_dirty_tree(tmp_path, monkeypatch) -> None:
    """A results folder tracked by git is written only from a clean tree (changes under results/ do not count),
    unless METALEARN_ALLOW_DIRTY=1."""
    import subprocess

    import pytest

    from metalearn.util.errors import MetalearnError
    from metalearn.util.provenance import ALLOW_DIRTY, git_commit, refuse_dirty_results

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "results" / "demo").mkdir(parents=True)
    (tmp_path / "results" / "demo" / "summary.csv").write_text("a\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("-c", "user.email=t@t", "-c", "user.name=t", "add", ".")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "init")
    monkeypatch.delenv(ALLOW_DIRTY, raising=False)
    (tmp_path / "results" / "demo" / "summary.csv").write_text("b\n")  # a run's own output: still clean
    assert not git_commit(tmp_path).endswith("-dirty")
    refuse_dirty_results(tmp_path / "results" / "demo")
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path).endswith("-dirty")
    with pytest.raises(MetalearnError, match="holds committed results and the tree has uncommitted changes"):
        refuse_dirty_results(tmp_path / "results" / "demo")
    refuse_dirty_results(tmp_path / "elsewhere")  # not committed: written from any tree
    monkeypatch.setenv(ALLOW_DIRTY, "1")
    refuse_dirty_results(tmp_path / "results" / "demo")
