"""The embedding cache: zero forwards on a hit, invalidation on every key part, damage (shards and meta),
resume, concurrent writers and a cache_dir that is a file."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from metalearn.data.manifest import Utterance
from metalearn.features.backbones import BackboneConfig, build_backbone
from metalearn.features.backbones.pooling import masked_mean
from metalearn.features.embeddings import EmbeddingConfig, ShardStore, extract, plan_batches
from metalearn.util.errors import MetalearnError
from tests.fixtures import write_nan_wav, write_wav


class Counting(torch.nn.Module):
    """Wraps a backbone, counts forwards, and can fail after ``fail_after`` batches (a killed run)."""

    def __init__(self, inner, fail_after: int | None = None) -> None:
        super().__init__()
        self.inner, self.calls, self.fail_after = inner, 0, fail_after
        self.num_states, self.hidden_size, self.name = inner.num_states, inner.hidden_size, inner.name

    def forward(self, waves, lengths):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("killed")
        self.calls += 1
        return self.inner(waves, lengths)


def _rows(folder: Path, n: int = 12) -> list[Utterance]:
    rows = []
    for i in range(n):
        seconds = 0.2 + 0.05 * (i % 5)
        path = write_wav(folder / f"u{i}.wav", seconds=seconds, freq=150 + 20 * i)
        rows.append(Utterance(f"u{i}", str(path), "esd", f"s{i % 3}", "female", "happy", "Happy", "train",
                              seconds, 16000))
    return rows


@pytest.fixture()
def setup(tmp_path):
    torch.manual_seed(0)
    backbone = Counting(build_backbone(BackboneConfig(family="whisper", source="tiny")))
    cfg = EmbeddingConfig(cache_dir=str(tmp_path / "cache"), batch_seconds=1.0, max_batch=4)
    return _rows(tmp_path / "wav"), backbone, cfg


def test_second_run_performs_no_forward(setup):
    rows, bb, cfg = setup
    first = extract(rows, bb, cfg)
    calls = bb.calls
    assert first.values.shape == (12, bb.num_states, bb.hidden_size) and calls > 0
    again = extract(rows, bb, cfg)
    assert bb.calls == calls and again.stats == {"cached": 12, "extracted": 0, "batches": 0,
                                                   "shards_rebuilt": 0}
    np.testing.assert_array_equal(first.values, again.values)
    assert [u.utterance_id for u in again.rows] == [u.utterance_id for u in rows]


def test_values_are_each_utterances_own_pooled_states(setup):
    rows, bb, cfg = setup
    emb = extract(rows, bb, cfg)
    from metalearn.data.audio import load_audio

    for i in (0, 7):
        w = torch.from_numpy(load_audio(rows[i].path))
        with torch.no_grad():
            out = bb(w[None], torch.tensor([w.shape[0]]))
        np.testing.assert_allclose(emb.values[i], masked_mean(out.hidden_states, out.lengths)[:, 0].numpy(),
                                   atol=1e-5)


def test_changed_file_is_the_only_one_re_extracted(setup):
    rows, bb, cfg = setup
    extract(rows, bb, cfg)
    write_wav(Path(rows[3].path), seconds=0.3, freq=999)  # new content, size and mtime
    os.utime(rows[3].path, ns=(1, 1))
    again = extract(rows, bb, cfg)
    assert again.stats["extracted"] == 1 and again.stats["cached"] == 11


@pytest.mark.parametrize("change", ["weights", "max_seconds", "storage", "mode"])
def test_every_key_part_invalidates(setup, change):
    rows, bb, cfg = setup
    extract(rows, bb, cfg)
    if change == "weights":
        with torch.no_grad():
            next(bb.parameters()).add_(1e-3)
    elif change == "max_seconds":
        cfg = dataclasses.replace(cfg, max_seconds=0.25)
    elif change == "storage":
        cfg = dataclasses.replace(cfg, storage="float16")
    else:
        bb.inner.mode, bb.name = "window", bb.inner.name.replace("trimmed", "window")
    again = extract(rows, bb, cfg)
    assert again.stats["extracted"] == 12 and again.stats["cached"] == 0


@pytest.mark.parametrize("damage", ["corrupt", "truncate", "delete_array"])
def test_damaged_shard_is_detected_and_rebuilt(setup, damage):
    rows, bb, cfg = setup
    first = extract(rows, bb, cfg)
    shard = sorted(Path(cfg.cache_dir).glob("*/000000.npy"))[0]
    if damage == "corrupt":
        data = bytearray(shard.read_bytes())
        data[-5] ^= 0xFF
        shard.write_bytes(bytes(data))
    elif damage == "truncate":
        shard.write_bytes(shard.read_bytes()[:-40])
    else:
        shard.unlink()
    again = extract(rows, bb, cfg)
    assert again.stats["shards_rebuilt"] == 1
    assert 0 < again.stats["extracted"] < 12
    np.testing.assert_allclose(again.values, first.values, atol=1e-6)


def test_killed_run_resumes_without_redoing_finished_batches(setup):
    rows, bb, cfg = setup
    n_batches = len(plan_batches([u.duration_s for u in rows], cfg.batch_seconds, cfg.max_batch))
    assert n_batches >= 4
    bb.fail_after = 2
    with pytest.raises(KeyboardInterrupt):
        extract(rows, bb, cfg)
    bb.fail_after, bb.calls = None, 0
    resumed = extract(rows, bb, cfg)
    assert bb.calls == n_batches - 2
    assert resumed.stats["cached"] + resumed.stats["extracted"] == 12
    bb.calls = 0
    assert extract(rows, bb, cfg).stats["extracted"] == 0 and bb.calls == 0


def test_bad_and_missing_files_are_reported_not_fatal(setup, tmp_path):
    rows, bb, cfg = setup
    bad = write_nan_wav(tmp_path / "wav" / "nan.wav")
    extra = [dataclasses.replace(rows[0], utterance_id="nan", path=str(bad)),
             dataclasses.replace(rows[0], utterance_id="gone", path=str(tmp_path / "gone.wav"))]
    emb = extract(rows + extra, bb, cfg)
    assert len(emb.rows) == 12 and emb.values.shape[0] == 12
    reasons = {Path(p.path).name: p.reason for p in emb.problems.problems}
    assert reasons["nan.wav"].startswith("non-finite") and reasons["gone.wav"] == "missing file"


def test_plan_batches_respects_the_budget():
    rng = np.random.default_rng(0)
    durations = list(rng.uniform(0.5, 8.0, size=200))
    batches = plan_batches(durations, batch_seconds=40.0, max_batch=16)
    assert sorted(i for b in batches for i in b) == list(range(200))
    for b in batches:
        assert len(b) <= 16
        assert len(b) == 1 or max(durations[i] for i in b) * len(b) <= 40.0
    assert len(batches) < 100  # actually batches (mean 4.25 s -> several per batch)


@pytest.mark.parametrize("damage", ["truncated", "not_json", "wrong_keys", "wrong_value", "a_list", "binary"])
def test_damaged_meta_rebuilds_the_cache_with_a_warning(setup, damage, caplog):
    rows, bb, cfg = setup
    first = extract(rows, bb, cfg)
    meta = next(Path(cfg.cache_dir).glob("*/meta.json"))
    text = meta.read_text()
    meta.write_bytes({"truncated": text[: len(text) // 2].encode(), "not_json": b"hello",
                      "wrong_keys": b'{"format": 1}', "wrong_value": text.replace('"mean"', '"max"').encode(),
                      "a_list": b"[1, 2]", "binary": b"\xff\xfe\x00"}[damage])
    bb.calls = 0
    with caplog.at_level(logging.WARNING, logger="metalearn.features.embeddings"):
        again = extract(rows, bb, cfg)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "meta.json is damaged" in warnings[0] and "rebuilt" in warnings[0]
    assert again.stats["extracted"] == 12 and again.stats["shards_rebuilt"] > 0 and bb.calls > 0
    np.testing.assert_allclose(again.values, first.values, atol=1e-6)
    assert meta.read_text() == text  # repaired
    assert extract(rows, bb, cfg).stats["extracted"] == 0


def test_cache_dir_pointing_at_a_file_is_a_one_line_error(setup, tmp_path):
    rows, bb, cfg = setup
    file = tmp_path / "cache.npy"
    file.write_text("x")
    with pytest.raises(MetalearnError, match=f"embedding cache_dir {file} is a file; expected a folder"):
        extract(rows, bb, dataclasses.replace(cfg, cache_dir=str(file)))
    with pytest.raises(MetalearnError, match=f"embedding cache_dir {file / 'sub'} lies inside the file {file}"):
        extract(rows, bb, dataclasses.replace(cfg, cache_dir=str(file / "sub")))


def test_processes_opening_and_filling_one_cache_at_once_lose_nothing(tmp_path):
    """Threads standing in for processes: each opens the same cache and appends shards; every shard survives."""
    key = {"format": 1, "name": "shared"}
    errors: list[BaseException] = []

    def work(me: int) -> None:
        try:
            store = ShardStore(tmp_path / "cache", key)
            for i in range(10):
                store.append([f"{me}-{i}-{j}" for j in range(3)], np.full((3, 2, 4), me * 100 + i, np.float32))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(me,)) for me in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    store = ShardStore(tmp_path / "cache", key)
    table = store.load()
    assert store.rebuilt == 0 and len(table) == 6 * 10 * 3
    assert all(float(table[f"{me}-{i}-0"][0, 0]) == me * 100 + i for me in range(6) for i in range(10))
