"""Tracker: local metrics.jsonl always; W&B mirror offline by default, failures only warn. Never uses the network."""

from __future__ import annotations

import json
import logging
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metalearn.report.tracking import Tracker, TrackingConfig, curve_points, resolve_mode
from metalearn.util.errors import MetalearnError

ALGORITHMS = ("protonet", "maml")
KS = (4, 1, 2)  # deliberately not sorted


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """W&B offline and quiet, no credentials, no wandb.init left over from another test."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_DIR", raising=False)


def summary_rows() -> list[dict]:
    """Synthetic summary rows: 2 algorithms x 3 ks, one protocol and pretune."""
    rows = []
    for k in KS:
        for i, algorithm in enumerate(ALGORITHMS):
            row = {"pretune": "none", "algorithm": algorithm, "protocol": "loso", "k": k, "n_trials": 10}
            for metric in ("accuracy", "macro_f1", "uar"):
                row[f"{metric}_mean"] = 0.3 + 0.05 * k + 0.01 * i
                row[f"{metric}_ci95"] = 0.02
            rows.append(row)
    return rows


def write_png(path: Path) -> Path:
    """A tiny RGB PNG."""
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(path)
    return path


def read_jsonl(path: Path) -> list[dict]:
    """All JSON lines of a file."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def wandb_records(path: Path) -> list:
    """Decode a .wandb file (LevelDB-style log of protobuf Records: 32 KiB blocks, 7-byte chunk headers)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, chunk, records = path.read_bytes(), 7, 32768, b"", []
    assert data.startswith(b":W&B")
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            break
        chunk += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # full or last chunk of a record
            record = pb.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
    return records


def finished_records(path: Path, timeout: float = 30.0) -> list:
    """The records of a finished run's .wandb file, polling until its exit record is on disk.

    The wandb service process writes the file; on a loaded machine its last block can land a moment after
    ``run.finish`` returns, so one immediate read may miss the exit record.
    """
    deadline = time.monotonic() + timeout
    while True:
        records = wandb_records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def history(records: list) -> list[dict]:
    """The logged history rows of a decoded run, user keys only."""
    rows = []
    for r in records:
        if r.WhichOneof("record_type") == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            rows.append({k: v for k, v in items.items() if not k.startswith("_")})
    return rows


def offline_run(run_dir: Path) -> Path:
    """The single offline run folder under run_dir/wandb/."""
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    return runs[0]


def test_curve_points_one_point_per_k_ascending() -> None:
    points = curve_points(summary_rows(), metrics=("accuracy",))
    assert [p["k"] for p in points] == [1, 2, 4]
    assert set(points[0]) == {"k", *(f"accuracy{s}/loso/none/{a}" for s in ("", "_ci95") for a in ALGORITHMS)}
    assert points[2]["accuracy/loso/none/maml"] == pytest.approx(0.51)


def test_offline_run_mirrors_local_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "results" / "demo"
    tracker = Tracker(run_dir, "demo", {"seed": 7, "algorithms": list(ALGORITHMS)}, TrackingConfig(tags=["t1"]))
    assert tracker.wandb_enabled
    tracker.log({"loss": 1.5}, step=0)
    tracker.log_curves(summary_rows())
    tracker.log_table("trials", [{"k": 1, "acc": 0.5}, {"k": 2}], columns=["k", "acc"])
    tracker.log_images({"curves": write_png(tmp_path / "curves.png")})
    tracker.log_summary({"best_accuracy": 0.9})
    hint = tracker.finish()
    assert tracker.finish() == hint  # safe to call twice

    run = offline_run(run_dir)
    shown = run.relative_to(tmp_path)
    assert hint == f"W&B offline run saved in {shown}; upload it with: wandb sync {shown}"
    wandb_file = next(run.glob("run-*.wandb"))
    lines = read_jsonl(run_dir / "metrics.jsonl")
    assert len(lines) == 1 + len(KS)
    assert all("time" in line for line in lines)
    assert lines[0]["loss"] == 1.5 and lines[0]["step"] == 0
    assert [line["k"] for line in lines[1:]] == [1, 2, 4]
    assert lines[1]["uar_ci95/loso/none/protonet"] == 0.02

    records = finished_records(wandb_file)
    rows = history(records)
    curves = [r for r in rows if "k" in r and "accuracy/loso/none/protonet" in r]
    assert [r["k"] for r in curves] == [1, 2, 4]
    assert curves[-1]["accuracy/loso/none/maml"] == pytest.approx(lines[-1]["accuracy/loso/none/maml"])
    assert any(r.get("trials/_type") == "table-file" for r in rows)
    assert any(r.get("curves/_type") == "image-file" for r in rows)
    kinds = [r.WhichOneof("record_type") for r in records]
    assert "exit" in kinds
    run_record = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run_record.display_name == "demo" and list(run_record.tags) == ["t1"]
    config = {i.key: json.loads(i.value_json) for i in run_record.config.update}
    assert config["seed"] == 7 and config["algorithms"] == list(ALGORITHMS)
    metrics = [r.metric for r in records if r.WhichOneof("record_type") == "metric"]
    assert {m.glob_name: m.step_metric for m in metrics if m.glob_name}["accuracy/*"] == "k"


def test_offline_run_is_syncable(tmp_path: Path) -> None:
    with Tracker(tmp_path, "sync", {}, TrackingConfig()) as tracker:
        tracker.log({"x": 1})
    run = offline_run(tmp_path)
    out = subprocess.run([sys.executable, "-m", "wandb", "sync", "--dry-run", str(run)], capture_output=True,
                         text=True, timeout=60, env={**os.environ, "WANDB_MODE": "offline"})
    assert out.returncode == 0, out.stderr
    assert "Would sync 1 run" in out.stdout + out.stderr


def test_mode_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_MODE")
    assert resolve_mode(TrackingConfig()) == "offline"
    tracker = Tracker(tmp_path / "a", "a", {}, TrackingConfig())
    assert tracker.mode == "offline"
    tracker.finish()
    offline_run(tmp_path / "a")

    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode(TrackingConfig()) == "disabled"
    monkeypatch.setenv("WANDB_MODE", "online")
    assert resolve_mode(TrackingConfig(mode="offline")) == "offline"
    with Tracker(tmp_path / "b", "b", {}, TrackingConfig(mode="offline")) as tracker:
        assert tracker.mode == "offline"
    offline_run(tmp_path / "b")
    with pytest.raises(MetalearnError, match="unknown W&B mode 'ofline'"):
        resolve_mode(TrackingConfig(mode="ofline"))


def test_wandb_off_writes_local_files_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import wandb

    monkeypatch.setattr(wandb, "init", lambda *a, **k: pytest.fail("wandb.init called"))
    with Tracker(tmp_path, "off", {}, TrackingConfig(wandb=False)) as tracker:
        tracker.log({"x": 1})
        tracker.log_curves(summary_rows())
        tracker.log_table("trials", [{"k": 1}], columns=["k"])
        assert not tracker.wandb_enabled
    assert tracker.finish() is None
    assert not (tmp_path / "wandb").exists()
    assert len(read_jsonl(tmp_path / "metrics.jsonl")) == 1 + len(KS)


def test_failing_wandb_warns_once_and_keeps_local_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import wandb

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no server")

    monkeypatch.setattr(wandb, "init", boom)
    with caplog.at_level(logging.WARNING, logger="metalearn.report.tracking"):
        tracker = Tracker(tmp_path, "fail", {}, TrackingConfig(mode="online"))
        tracker.log({"x": 1}, step=3)
        tracker.log_curves(summary_rows())
        tracker.log_table("trials", [{"k": 1}], columns=["k"])
        tracker.log_images({"p": tmp_path / "missing.png"})
        tracker.log_summary({"a": 1})
        assert tracker.finish() is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "RuntimeError: no server" in warnings[0].getMessage()
    assert len(read_jsonl(tmp_path / "metrics.jsonl")) == 1 + len(KS)


def test_error_after_init_stops_mirroring_and_still_finishes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="metalearn.report.tracking"), pytest.raises(ValueError, match="bad"):
        with Tracker(tmp_path, "later", {}, TrackingConfig()) as tracker:
            tracker.log_images({"p": tmp_path / "missing.png"})  # wandb.Image raises
            assert not tracker.wandb_enabled
            tracker.log({"x": 1})
            raise ValueError("bad")
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    assert tracker.hint is not None and "wandb sync" in tracker.hint
    records = finished_records(next(offline_run(tmp_path).glob("run-*.wandb")))
    assert [r.exit.exit_code for r in records if r.WhichOneof("record_type") == "exit"] == [1]
    assert read_jsonl(tmp_path / "metrics.jsonl")[0]["x"] == 1


@pytest.mark.parametrize("blank", ["", "  "])
def test_a_blank_wandb_mode_is_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, blank: str
) -> None:
    """``WANDB_MODE=`` (a blank line in a job file) means offline, and W&B still starts (it refuses a blank mode)."""
    monkeypatch.setenv("WANDB_MODE", blank)
    assert resolve_mode(TrackingConfig()) == "offline"
    assert resolve_mode(TrackingConfig(mode="disabled")) == "disabled"
    with caplog.at_level(logging.WARNING, logger="metalearn.report.tracking"):
        with Tracker(tmp_path, "blank", {}, TrackingConfig()) as tracker:
            assert tracker.mode == "offline" and tracker.wandb_enabled
            tracker.log({"x": 1})
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "wandb sync" in (tracker.hint or "")
    offline_run(tmp_path)


def test_paper_a_sized_trials_survive_as_an_artifact(tmp_path: Path) -> None:
    """33,600 trial rows (Paper A's grid) go into a W&B Artifact table whole (a history table keeps 10,000), read
    back from the offline run; a chart per variant puts every algorithm on one k axis."""
    rows = [{"k": i % 7, "accuracy": (i % 100) / 100, "speaker": f"{i % 20:04d}"} for i in range(33_600)]
    with Tracker(tmp_path, "paper_a", {}, TrackingConfig()) as tracker:
        tracker.log_table("trials", rows, ["k", "accuracy", "speaker"])
        tracker.log_line_charts(summary_rows())
    records = finished_records(next(offline_run(tmp_path).glob("run-*.wandb")))
    artifacts = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
    artifacts = [a for a in artifacts if a.type == "trials"]
    assert len(artifacts) == 1
    entry = next(e for e in artifacts[0].manifest.contents if e.path.endswith(".table.json"))
    table = json.loads(Path(entry.local_path).read_text())
    assert table["columns"] == ["k", "accuracy", "speaker"] and len(table["data"]) == 33_600
    assert table["data"][-1] == [33_599 % 7, 0.99, "0019"]
    logged = {k for r in history(records) for k in r}
    assert "trials/_type" not in logged  # too many rows for a history table: the artifact holds them
    assert any(k.startswith("charts/accuracy/loso/none") for k in logged)
