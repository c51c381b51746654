"""``pretune.extra``: an exported variant (or a transformers folder, or a hub id in the local cache) named in a
config runs beside the trained variants, with the embeddings of the variant it was exported from."""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from metalearn.configs.load import load_config
from metalearn.data.manifest import Utterance, read_manifest, write_manifest
from metalearn.features.backbones import BackboneConfig
from metalearn.pretune.config import PretuneConfig
from metalearn.pretune.export import export_variant
from metalearn.pretune.extra import extra_variants, source_config
from metalearn.pretune.subsets import Training, parse_subsets, run_variants
from metalearn.report.records import VOLATILE
from metalearn.run.runner import run_experiment
from metalearn.run.stages import open_variant, prepare_variants, variant_features
from metalearn.util.errors import MetalearnError
from tests.conftest import overrides
from tests.fixtures import write_wav

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see tests/conftest.py
RECIPE = PretuneConfig(lr=1e-3, batch_size=4, grad_accum=1, max_epochs=1, patience=1, max_seconds=0.5,
                       steps_per_epoch=1, eval_batch_size=8, num_workers=0, device="cpu", trainable_layers=1)
SPEAKERS = ["s0", "s1", "s2", "s3"]


def _rows(root: Path) -> list[Utterance]:
    """4 speakers x 2 emotions x 4 tones (low: neutral, high: angry), each speaker at its own pitch."""
    rng, rows = np.random.default_rng(0), []
    for s, speaker in enumerate(SPEAKERS):
        for i in range(8):
            emotion = ("neutral", "angry")[i % 2]
            t = np.arange(6000) / 16_000
            f = (150.0 if emotion == "neutral" else 450.0) * (1 + 0.1 * s)
            x = 0.3 * np.sin(2 * np.pi * f * t) + 0.02 * rng.standard_normal(6000)
            uid = f"{speaker}_{i:02d}"
            path = write_wav(root / "alpha" / f"{uid}.wav", data=x.astype(np.float32))
            rows.append(Utterance(uid, str(path), "alpha", speaker, "female", emotion, emotion, "", 0.375, 16_000))
    return rows


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A manifest, a trained tiny Whisper variant (pft-alpha) and its export, and a folds.json of one fold."""
    root = tmp_path_factory.mktemp("extra")
    rows = _rows(root)
    write_manifest(rows, root / "alpha.csv")
    run_variants(rows, parse_subsets("alpha", ["alpha"]), root / "trained",
                 Training(RECIPE, BackboneConfig(family="whisper", source="tiny"), torch.device("cpu")))
    export_variant(root / "trained" / "pft-alpha", root / "exported")
    (root / "folds.json").write_text(json.dumps([{"fold": 0, "test": ["s0", "s1"], "validation": ["s2"],
                                                  "meta_train": ["s3"]}]))
    return root


def _config(base: Path, out: str, *extra: str):
    return load_config(None, overrides(base, out, f"data.target.manifest={base / 'alpha.csv'}",
                                       "episodes.disjoint=none", *extra, target=base, algorithms=["simpleshot"],
                                       ks=[1], repetitions=1, meta_train=False))


def _trials(folder: Path) -> list[dict]:
    with open(folder / "trials.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k not in VOLATILE} for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def ran(base: Path):
    """The run of the tiny config with the export as extra variant ``shared`` and the folds file."""
    cfg = _config(base, "run", f"pretune.extra.shared={base / 'exported'}",
                  f"speakers.folds_file={base / 'folds.json'}")
    assert run_experiment(cfg).complete
    return cfg


def test_exported_folder_runs_as_a_variant_with_the_original_embeddings(base: Path, ran) -> None:
    cfg = ran
    trials = _trials(base / "run")
    assert {r["pretune"] for r in trials} == {"none", "shared"}
    assert {r["speaker"] for r in trials} == {"s0", "s1"}  # the folds file's test speakers, only
    assert json.loads((base / "run" / "folds.json").read_text()) == [
        {**json.loads((base / "folds.json").read_text())[0], "meta_train_sources": {}}]  # none named: {}
    variants = prepare_variants(cfg, train=False)
    shared = variants["shared"]
    assert shared.kind == "supervised" and shared.trained_on == ("alpha",) and shared.weights is None
    assert shared.folder == base / "pretune" / "extra" / "shared"
    rows = read_manifest(base / "alpha.csv")
    table = variant_features(cfg, shared, rows)
    kept, mine = table.rows, table.x
    original = variant_features(cfg, open_variant(base / "trained" / "pft-alpha"), rows).x
    untouched = variant_features(cfg, variants["none"], rows).x
    assert len(kept) == 32 and mine.shape == original.shape
    assert (original - untouched).abs().max() > 1e-4  # the test can tell a trained variant from the untouched one
    assert (mine - original).abs().max() <= 1e-6


def test_hub_id_from_the_local_cache_offline(base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    start = time.perf_counter()
    with pytest.raises(MetalearnError, match="not in the local Hugging Face cache while HF_HUB_OFFLINE") as e:
        extra_variants({"remote": "someone/not-cached"}, tmp_path / "extra", "trimmed")
    assert time.perf_counter() - start < 5 and "\n" not in str(e.value)
    commit = "0123456789abcdef0123456789abcdef01234567"  # the cache's layout: refs/main -> snapshots/<commit>/
    repo = tmp_path / "hub" / "models--someone--shared"
    shutil.copytree(base / "exported", repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    (folder,) = extra_variants({"remote": "someone/shared"}, tmp_path / "extra", "trimmed").values()
    config = json.loads((folder / "config.json").read_text())
    assert config["backbone"]["source"] == str(repo / "snapshots" / commit) and config["kind"] == "supervised"
    assert config["extra"]["spec"] == "someone/shared" and open_variant(folder).name == "remote"


def test_plain_folders_checks_and_refusals(base: Path, tmp_path: Path) -> None:
    from transformers import WhisperConfig, WhisperModel

    plain = tmp_path / "plain"
    small = WhisperConfig(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                          decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32)
    WhisperModel(small).save_pretrained(plain)
    config = source_config(plain, "pretune.extra.p", "window")
    assert (config["kind"], config["weights"], config["backbone"]["whisper_mode"]) == ("none", None, "window")
    out = tmp_path / "extra"
    extra_variants({"p": str(plain)}, out, "window")
    assert extra_variants({"p": str(plain)}, out, "window") == {"p": out / "p"}  # unchanged: reused
    with pytest.raises(MetalearnError, match="was made from another source"):
        extra_variants({"p": str(base / "exported")}, out, "window")
    (plain / "model.safetensors").write_bytes((plain / "model.safetensors").read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(MetalearnError, match="was made from another weights"):
        extra_variants({"p": str(plain)}, out, "window")
    with pytest.raises(MetalearnError, match="the name must be new among the run's variants"):
        extra_variants({"none": str(plain)}, out, "window", taken=["none"])
    with pytest.raises(MetalearnError, match="is neither a folder nor a hub id"):
        extra_variants({"q": "no such/folder/here"}, out, "window")
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(MetalearnError, match="holds a 'bert' model, not a speech backbone"):
        extra_variants({"b": str(bert)}, out, "window")
    odd = tmp_path / "odd"
    shutil.copytree(base / "exported", odd)
    (odd / "sha256.json").unlink()  # an edited sidecar fails its manifest first (tests/test_silent_damage.py)
    meta = json.loads((odd / "metalearn.json").read_text())
    (odd / "metalearn.json").write_text(json.dumps({**meta, "kind": "clap"}))
    with pytest.raises(MetalearnError, match="is a CLAP export without clap_heads.safetensors"):
        extra_variants({"o": str(odd)}, out, "window")
    (odd / "metalearn.json").write_text(json.dumps({**meta, "kind": "mystery"}))
    with pytest.raises(MetalearnError, match="not an export this version reads"):
        extra_variants({"o": str(odd)}, out, "window")
