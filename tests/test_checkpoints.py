"""Pretune checkpoints are verified on loading: done.json records each file's SHA-256 and size.

A flipped byte or a truncated file is one MetalearnError naming the file and what to do; an intact variant
loads; a done.json written before the hashes were recorded loads with a warning.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from metalearn.clap.model import ClapConfig, ClapModel
from metalearn.clap.variant import HEADS as CLAP_HEADS
from metalearn.clap.variant import ClapVariant, _save
from metalearn.data.manifest import Utterance
from metalearn.features.backbones import BackboneConfig, build_backbone
from metalearn.pretune import subsets
from metalearn.pretune.config import PretuneConfig
from metalearn.pretune.subsets import (
    HEADS,
    WEIGHTS,
    Training,
    backbone_for_variant,
    file_sha256,
    load_variant,
    run_variants,
    write_done,
)
from metalearn.pretune.variant import PretuneVariant
from metalearn.util.errors import MetalearnError
from tests.fixtures import write_wav

WHISPER = BackboneConfig(family="whisper", source="tiny")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pretune output folder with ``none`` and ``pft-alpha`` (tiny Whisper, 2 steps)."""
    root = tmp_path_factory.mktemp("ckpt")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        emotion = ("neutral", "angry", "sad")[i % 3]
        t = np.arange(6400) / 16_000
        x = 0.3 * np.sin(2 * np.pi * (150 + 150 * (i % 3)) * t) + 0.02 * rng.standard_normal(t.shape)
        path = write_wav(root / "alpha" / f"a{i:02d}.wav", data=x.astype(np.float32))
        rows.append(Utterance(f"a{i:02d}", str(path), "alpha", f"s{i % 2}", "female", emotion, emotion, "",
                              0.4, 16_000))
    cfg = PretuneConfig(lr=1e-3, batch_size=4, grad_accum=1, max_epochs=1, patience=1, max_seconds=0.4,
                        steps_per_epoch=2, eval_batch_size=8, num_workers=0, device="cpu", trainable_layers=1)
    run_variants(rows, [(), ("alpha",)], root / "out", Training(cfg, WHISPER, CPU))
    return root / "out"


@pytest.fixture
def variant(trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of ``pft-alpha``, hashed afresh (as a later process would)."""
    monkeypatch.setattr(subsets, "_HASHES", {})
    monkeypatch.setattr(subsets, "_WARNED", set())
    return Path(shutil.copytree(trained / "pft-alpha", tmp_path / "pft-alpha"))


def _flip_near_end(path: Path, n: int = 4) -> None:
    data = bytearray(path.read_bytes())
    for i in range(n):
        data[-(8 + 16 * i)] ^= 0xFF
    path.write_bytes(bytes(data))


def test_done_json_records_each_checkpoint(trained: Path) -> None:
    done = json.loads((trained / "pft-alpha" / "done.json").read_text())
    assert set(done["sha256"]) == set(done["bytes"]) == {WEIGHTS, HEADS}
    for name, digest in done["sha256"].items():
        path = trained / "pft-alpha" / name
        assert digest == file_sha256(path) and len(digest) == 64 and done["bytes"][name] == path.stat().st_size
    assert json.loads((trained / "none" / "done.json").read_text())["sha256"] == {}


def test_an_intact_variant_loads_and_verifies(variant: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        backbone = PretuneVariant.read(variant).load_backbone()
        PretuneVariant.read(variant).verify()
    assert backbone.name.endswith("@pft-alpha") and not caplog.records
    saved = load_file(str(variant / WEIGHTS))
    assert all(torch.equal(v, saved[k]) for k, v in backbone.state_dict().items())


def test_flipped_bytes_near_the_end_are_one_line_naming_the_file(variant: Path) -> None:
    _flip_near_end(variant / WEIGHTS)
    for load in (lambda: PretuneVariant.read(variant).load_backbone(),
                 lambda: load_variant(variant, build_backbone(WHISPER)),
                 lambda: backbone_for_variant(variant),
                 lambda: PretuneVariant.read(variant).verify()):
        with pytest.raises(MetalearnError) as e:
            load()
        message = str(e.value)
        assert "\n" not in message and str(variant / WEIGHTS) in message and "SHA-256" in message
        assert f"delete {variant}" in message and "retrain" in message


def test_a_truncated_file_is_one_line_naming_the_file(variant: Path) -> None:
    path = variant / WEIGHTS
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[: size // 2])
    with pytest.raises(MetalearnError, match=rf"{path} is damaged: {size // 2} bytes, {size} when it was written "
                                             r"\(truncated\); delete .* to retrain"):
        PretuneVariant.read(variant).load_backbone()


def test_a_changed_file_is_hashed_again_in_the_same_process(variant: Path) -> None:
    PretuneVariant.read(variant).load_backbone()        # hashed and cached
    path = variant / WEIGHTS
    stat = path.stat()
    _flip_near_end(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    with pytest.raises(MetalearnError, match="SHA-256"):
        PretuneVariant.read(variant).load_backbone()


def test_each_file_is_hashed_once_per_process(variant: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = subsets.sha256_file
    monkeypatch.setattr(subsets, "sha256_file", lambda p: calls.append(str(p)) or real(p))
    for _ in range(3):
        PretuneVariant.read(variant).load_backbone()
    assert calls == [str(variant / WEIGHTS)]


def test_an_old_done_json_without_hashes_loads_with_one_warning(variant: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    (variant / "done.json").write_text(json.dumps({"variant": "pft-alpha", "finished": 0.0}))
    with caplog.at_level(logging.WARNING):
        PretuneVariant.read(variant).load_backbone()
        PretuneVariant.read(variant).load_backbone()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "records no checkpoint hashes" in warnings[0] and str(variant) in warnings[0]
    # Unverifiable and damaged: still one line naming the file, not safetensors' own error.
    (variant / WEIGHTS).write_bytes((variant / WEIGHTS).read_bytes()[:100])
    with pytest.raises(MetalearnError, match=rf"{variant / WEIGHTS}: not a readable safetensors file"):
        PretuneVariant.read(variant).load_backbone()


def test_a_damaged_done_json_is_one_line(variant: Path) -> None:
    (variant / "done.json").write_text("{not json")
    with pytest.raises(MetalearnError, match=r"done.json: unreadable \(JSONDecodeError\); delete"):
        PretuneVariant.read(variant).load_backbone()


def test_clap_heads_are_verified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CLAP variant folder as train_clap_variant writes it (frozen encoder: heads only)."""
    monkeypatch.setattr(subsets, "_HASHES", {})
    folder = tmp_path / "clap-sl-alpha"
    folder.mkdir()
    cfg = ClapConfig(text_source="tiny", embed_dim=8)
    torch.manual_seed(0)
    model = ClapModel(12, cfg)
    (folder / "config.json").write_text(json.dumps({
        "variant": folder.name, "kind": "clap", "corpora": ["alpha"], "weights": None, "audio_dim": 12,
        "backbone": dataclasses.asdict(WHISPER), "clap": dataclasses.asdict(cfg)}))
    _save(model.heads_state_dict(), folder / CLAP_HEADS)
    write_done(folder, folder.name, [CLAP_HEADS])
    heads = ClapVariant.read(folder).heads
    assert all(torch.equal(v, model.heads_state_dict()[k]) for k, v in heads.heads_state_dict().items())
    monkeypatch.setattr(subsets, "_HASHES", {})
    _flip_near_end(folder / CLAP_HEADS)
    with pytest.raises(MetalearnError, match=rf"{folder / CLAP_HEADS} is damaged: its SHA-256"):
        _ = ClapVariant.read(folder).heads
