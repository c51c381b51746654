"""The pre-finetuning head: a chosen state or a learned mix, trainable layers ending at it, a truncated forward,
the frozen trunk cached, and what the variant folder then holds (record, feature, fingerprint)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from metalearn.data.manifest import Utterance, read_manifest, write_manifest
from metalearn.features.backbones import BackboneConfig
from metalearn.pretune.config import PretuneConfig
from metalearn.pretune.model import MultiHeadClassifier, freeze_for_head, head_state
from metalearn.pretune.records import first_difference, variant_record, write_pretune_report
from metalearn.pretune.subsets import Training, ensure_variants, parse_subsets, run_variants
from metalearn.pretune.variant import PretuneVariant
from metalearn.util.errors import MetalearnError
from tests.fixtures import write_wav

WHISPER = BackboneConfig(family="whisper", source="tiny")
CPU = torch.device("cpu")
FREQ = {"neutral": 150.0, "happy": 300.0, "angry": 450.0, "sad": 600.0}


def _whisper_3() -> torch.nn.Module:
    """A tiny random Whisper with 3 layers (4 states), so that states below, at and above a head all exist."""
    from metalearn.features.backbones import tiny, whisper

    torch.manual_seed(0)
    return whisper.whisper_from_config({**tiny.WHISPER_TINY, "encoder_layers": 3}).eval()


def _trainable(module: torch.nn.Module) -> set[str]:
    return {n for n, p in module.named_parameters() if p.requires_grad}


def test_trainable_layers_end_at_the_head_state() -> None:
    b = _whisper_3()
    assert head_state(1, 4) == 1 and head_state(-1, 4) == 3 and head_state("mix", 4) == 3
    with pytest.raises(MetalearnError, match="pretune layer 4"):
        head_state(4, 4)
    freeze_for_head(b, 1, 2)  # state 2 is made by layer 2 (encoder.layers[1])
    assert {n.split(".")[2] for n in _trainable(b)} == {"1"} and all(n.startswith("encoder.layers.1.")
                                                                      for n in _trainable(b))
    freeze_for_head(b, 2, 3)  # the top two and the final norm
    assert {n.split(".")[1] for n in _trainable(b)} == {"layers", "layer_norm"}
    assert not any(n.startswith("encoder.layers.0.") for n in _trainable(b))
    freeze_for_head(b, None, 1)  # everything up to the head; nothing above it
    assert "encoder.conv1.weight" in _trainable(b) and "encoder.layers.0.fc1.weight" in _trainable(b)
    above = ("encoder.layers.1.", "encoder.layers.2.", "encoder.layer_norm")
    assert not any(n.startswith(above) for n in _trainable(b))
    freeze_for_head(b, 0, 2)
    assert not _trainable(b)
    with pytest.raises(MetalearnError, match="trainable_layers=2 but the head reads hidden state 1"):
        freeze_for_head(b, 2, 1)


@pytest.mark.parametrize("layer", [1, -1, "mix"])
def test_truncated_and_cached_forwards_equal_the_full_forward(layer: int | str) -> None:
    b = _whisper_3()
    model = MultiHeadClassifier(b, {"a": ["x", "y"]}, layer)
    waves, lengths = torch.randn(3, 9000), torch.tensor([9000, 6000, 4000])
    with torch.no_grad():
        full = b(waves, lengths)
        from metalearn.features.backbones.pooling import masked_mean

        want = masked_mean(full.hidden_states[model.read_states], full.lengths)  # [S, B, D]
        assert torch.allclose(model.pooled(waves, lengths), want, atol=1e-5)
        freeze_for_head(b, 1, model.top)
        assert model.cache_trunk(model.top - 1, 2**30)
        keys = ["k0", "k1", "k2"]
        first = model.pooled(waves, lengths, keys)
        assert model.trunk_cache.computed == 3
        again = model.pooled(waves[[2, 0]], lengths[[2, 0]], ["k2", "k0"])  # other batch-mates, cached
        assert model.trunk_cache.computed == 3
    assert torch.allclose(first, want, atol=1e-5) and torch.allclose(again, want[:, [2, 0]], atol=1e-5)
    if layer == "mix":
        assert model.mix is not None and torch.allclose(model.mix_weights(), torch.full((4,), 0.25))
        assert torch.allclose(model.embed(waves, lengths), want.mean(0), atol=1e-5)  # uniform at start


def _corpus(root: Path, name: str, n: int, rng: np.random.Generator, split: str = "") -> Path:
    rows = []
    for i in range(n):
        emotion = list(FREQ)[i % 4]
        t = np.arange(int(0.4 * 16_000)) / 16_000
        x = 0.3 * np.sin(2 * np.pi * FREQ[emotion] * t) + 0.02 * rng.standard_normal(t.shape)
        path = write_wav(root / name / f"{name}_{i:03d}.wav", data=x.astype(np.float32))
        rows.append(Utterance(f"{name}_{i:03d}", str(path), name, f"spk{i % 5}", "female", emotion, emotion,
                              split, 0.4, 16_000))
    return write_manifest(rows, root / f"{name}.csv")


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> list[Utterance]:
    root, rng = tmp_path_factory.mktemp("sources"), np.random.default_rng(0)
    return read_manifest(_corpus(root, "alpha", 40, rng))


def _cfg(**kw: object) -> PretuneConfig:
    base = dict(lr=1e-3, batch_size=4, grad_accum=1, max_epochs=2, patience=2, max_seconds=0.4, eval_batch_size=8,
                num_workers=0, device="cpu", trainable_layers=1, probe_l2=[1e-2], standardize=True)
    return PretuneConfig(**{**base, **kw})


def test_a_mix_variant_records_its_feature_and_probe(sources: list[Utterance], tmp_path: Path) -> None:
    out = tmp_path / "v"
    cfg = _cfg(layer="mix")
    folders = ensure_variants(sources, parse_subsets("none,alpha", ["alpha"]), out, Training(cfg, WHISPER, CPU))
    assert folders == {"none": out / "none", "pft-alpha": out / "pft-alpha"}
    record = variant_record(out / "pft-alpha")
    assert variant_record(out / "none") is None
    assert record["head_layer"] == "mix" and record["kind"] == "supervised" and record["corpora"] == ["alpha"]
    n_train = record["per_corpus"]["alpha"]["sizes"]["train"]
    assert record["passes"] == pytest.approx(record["steps"] * 4 / n_train)
    for key in ("dev_accuracy", "test_accuracy", "probe_dev_accuracy", "probe_test_accuracy"):
        assert 0.0 <= record[key] <= 1.0
    variant = PretuneVariant.read(out / "pft-alpha")
    assert variant.head_layer == "mix" and PretuneVariant.read(out / "none").head_layer is None
    values = np.random.default_rng(1).standard_normal((5, 3, 32)).astype(np.float32)  # tiny whisper: 3 states
    mix = variant.mix
    assert mix["weights"].shape == (3,) and mix["weights"].sum() == pytest.approx(1.0)
    assert mix["scale"].shape == (3, 32) and not np.allclose(mix["scale"], 1.0)  # the fixed z-score is saved
    want = np.einsum("s,nsd->nd", mix["weights"], (values - mix["shift"]) / mix["scale"])
    np.testing.assert_allclose(variant.features(values, "mix").numpy(), want, rtol=1e-5, atol=1e-5)
    assert variant.feature_name("mix", 3) == "mix" and variant.feature_name(-1, 3) == "2"
    with pytest.raises(MetalearnError, match="no learned mix"):
        PretuneVariant.read(out / "none").features(values, "mix")
    paths = write_pretune_report([record, None], tmp_path / "run")
    report = json.loads(paths[0].read_text())
    assert [r["variant"] for r in report] == ["pft-alpha"] and list(report[0])[:3] == ["variant", "kind", "head_layer"]
    assert "| pft-alpha | mix |" in paths[1].read_text()


def test_a_finished_variant_is_reused_only_when_it_matches(sources: list[Utterance], tmp_path: Path) -> None:
    out, cfg = tmp_path / "v", _cfg(layer=1, max_epochs=1)
    subsets = parse_subsets("alpha", ["alpha"])
    assert run_variants(sources, subsets, out, Training(cfg, WHISPER, CPU)) == {"pft-alpha": "trained"}
    record = variant_record(out / "pft-alpha")
    assert record["head_layer"] == 1 and PretuneVariant.read(out / "pft-alpha").head_layer == 1
    knobs = _cfg(layer=1, max_epochs=1, device="cpu", num_workers=1)  # speed and placement are not identity
    assert run_variants(sources, subsets, out, Training(knobs, WHISPER, CPU)) == {"pft-alpha": "skipped (done)"}
    with pytest.raises(MetalearnError, match=r"pft-alpha was made differently from this config: recipe\.lr: "
                                             r"folder 0\.001, config 0\.01; delete the folder"):
        run_variants(sources, subsets, out, Training(_cfg(layer=1, max_epochs=1, lr=1e-2), WHISPER, CPU))
    changed = [sources[0].__class__(**{**sources[0].__dict__, "emotion": "sad"})] + sources[1:]
    with pytest.raises(MetalearnError, match=r"rows\.alpha: folder [0-9a-f]+, config [0-9a-f]+"):
        ensure_variants(changed, subsets, out, Training(cfg, WHISPER, CPU))
    with pytest.raises(MetalearnError, match=r"pretune variants \['pft-alpha'\] are not trained .*--prepare"):
        ensure_variants(sources, subsets, tmp_path / "empty", Training(cfg, WHISPER, CPU), train=False)
    assert first_difference({"a": {"b": 1, "c": [1, 2]}}, {"a": {"b": 1.0, "c": [1, 3]}}) == ("a.c[1]", 2, 3)


def test_pooled_part_keeps_the_row_order(sources: list[Utterance]) -> None:
    from metalearn.data.audio import load_audio
    from metalearn.pretune.data import build_splits
    from metalearn.pretune.train import pooled_part

    rows = [dataclasses.replace(u, duration_s=0.1 + (i * 7 % 11) / 10) for i, u in enumerate(sources)]
    splits = build_splits(rows, 0)
    model = MultiHeadClassifier(_whisper_3(), {"alpha": splits["alpha"].labels}, 2)
    x, y = pooled_part(model, splits, "train", _cfg(eval_batch_size=3), CPU)["alpha"]
    train = splits["alpha"].train
    assert x.shape == (len(train), 1, 32) and y.tolist() == [splits["alpha"].labels.index(u.emotion) for u in train]
    for i in (0, len(train) // 2, len(train) - 1):
        wave = torch.from_numpy(load_audio(train[i].path, max_seconds=0.4))
        with torch.no_grad():
            alone = model.pooled(wave[None], torch.tensor([len(wave)]))
        assert torch.allclose(x[i], alone[:, 0], atol=1e-5)
