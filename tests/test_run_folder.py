"""The run folder's config guard: any work of another config is refused before anything is written; committed
tables are replaced; path mistakes are one-line errors."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from metalearn.run.run_folder import save_config, work_in
from metalearn.util.errors import MetalearnError
from metalearn.util.lock import run_lock


@dataclasses.dataclass
class Episodes:
    ks: list[int] = dataclasses.field(default_factory=lambda: [1, 5])
    repetitions: int = 3


@dataclasses.dataclass
class Config:
    name: str = "demo"
    seed: int = 0
    episodes: Episodes = dataclasses.field(default_factory=Episodes)


OTHER = Config(episodes=Episodes(repetitions=4))
WORK = ["trials.jsonl", "trials-shard2of3.jsonl", "episodes-seed0.jsonl", "records.jsonl", "curves/v-s1-seed0.jsonl",
        "run.json", "run-shard2.json"]
TABLES = ["summary.csv", "summary.md", "accuracy_vs_k.png", "run.json"]  # a fresh clone's committed result


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def started(folder: Path, config: Config, files: list[str]) -> Path:
    """``folder`` after a run of ``config`` that left ``files``."""
    save_config(config, folder)
    for name in files:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("{}\n")
    return folder


def test_a_new_folder_is_created_with_the_resolved_config(tmp_path: Path) -> None:
    out = tmp_path / "results" / "demo"
    save_config(Config(), out)
    assert "repetitions: 3" in (out / "config.yaml").read_text()
    assert work_in(out) is None


@pytest.mark.parametrize("work", WORK)
def test_any_work_of_another_config_is_refused_and_left_untouched(tmp_path: Path, work: str) -> None:
    out = started(tmp_path / "run", Config(), [work])
    assert work_in(out) == out / work
    before = snapshot(out)
    with pytest.raises(MetalearnError, match=r"holds a run with another config \(first difference: config key "
                                             r"'episodes.repetitions': 3 in its config.yaml, 4 now\)"):
        save_config(OTHER, out)
    assert snapshot(out) == before
    save_config(Config(name="renamed"), out)  # the same science resumes
    assert "name: renamed" in (out / "config.yaml").read_text()


def test_committed_tables_without_logs_are_replaced(tmp_path: Path) -> None:
    out = started(tmp_path / "run", Config(), TABLES)
    assert work_in(out) is None
    save_config(OTHER, out)
    assert "repetitions: 4" in (out / "config.yaml").read_text()


def test_committed_tables_with_logs_beside_them_are_work(tmp_path: Path) -> None:
    out = started(tmp_path / "run", Config(), [*TABLES, "trials.jsonl"])
    with pytest.raises(MetalearnError, match="another config"):
        save_config(OTHER, out)


def test_lock_files_are_no_work(tmp_path: Path) -> None:
    with run_lock(tmp_path / "run", (0, 1)):
        save_config(Config(), tmp_path / "run")
        assert work_in(tmp_path / "run") is None
        save_config(OTHER, tmp_path / "run")


def test_work_without_a_config_is_refused(tmp_path: Path) -> None:
    out = started(tmp_path / "run", Config(), ["trials.jsonl"])
    (out / "config.yaml").unlink()
    with pytest.raises(MetalearnError, match=r"holds work of an earlier run \(trials.jsonl\) but no config.yaml"):
        save_config(Config(), out)
    assert not (out / "config.yaml").exists()


@pytest.mark.parametrize("damage", ["episodes: {ks: [1, 5", "\x00\x01", "a: ${oops"])
def test_a_damaged_config_beside_work_is_a_one_line_error(tmp_path: Path, damage: str) -> None:
    out = started(tmp_path / "run", Config(), ["trials.jsonl"])
    (out / "config.yaml").write_text(damage)
    with pytest.raises(MetalearnError, match=f"{out / 'config.yaml'} is unreadable .*; expected the YAML") as e:
        save_config(Config(), out)
    assert "\n" not in str(e.value)
    assert (out / "config.yaml").read_text() == damage


def test_out_is_a_file_or_inside_one(tmp_path: Path) -> None:
    file = tmp_path / "summary.csv"
    file.write_text("x")
    with pytest.raises(MetalearnError, match=f"run folder {file} is a file; expected a folder"):
        save_config(Config(), file)
    with pytest.raises(MetalearnError, match=f"run folder {file / 'demo'} lies inside the file {file}"):
        save_config(Config(), file / "demo")
    assert file.read_text() == "x"


def test_a_read_only_out_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    out.mkdir()
    if os.geteuid() != 0:  # a real read-only folder where permissions bind
        out.chmod(0o555)
    else:  # root writes anyway: the folder is read-only as far as access() tells
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != out and real(p, mode))
    try:
        with pytest.raises(MetalearnError, match=f"run folder {out} is not writable; expected a folder"):
            save_config(Config(), out)
    finally:
        out.chmod(0o755)
    assert not (out / "config.yaml").exists()


def test_a_failed_config_write_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails after the checks (disk full, a read-only mount) names the file."""
    import metalearn.run.run_folder as run_folder

    def full(path: Path, data: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(run_folder, "write_atomic", full)
    with pytest.raises(MetalearnError, match=r"cannot write .*config.yaml \(No space left on device\)"):
        save_config(Config(), tmp_path / "run")
