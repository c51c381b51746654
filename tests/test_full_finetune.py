"""Per-episode fine-tuning of a tiny backbone from audio (CPU_SMALL preset)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import soundfile as sf
import torch

from metalearn.features.backbones import BackboneConfig, build_backbone
from metalearn.fewshot.algorithms import AdapterSpec, AudioInputs, build_adapter
from metalearn.fewshot.algorithms.full_finetune import CPU_SMALL, FullFinetune, FullFinetuneConfig
from metalearn.fewshot.episodes import Episode
from metalearn.fewshot.trials import RECORD_FIELDS, TrialTags, run_trials
from metalearn.pretune.model import transformer_layers
from metalearn.util.errors import MetalearnError

SR = 16_000


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("wavs")
    rng = np.random.default_rng(0)
    t = np.arange(int(0.3 * SR)) / SR
    out = {}
    for spk in ("s1", "s2"):
        for label, freq in ((0, 220.0), (1, 1760.0)):
            for i in range(7):
                wave = 0.5 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)
                key = f"toy/{spk}_{label}_{i}"
                path = root / f"{spk}_{label}_{i}.wav"
                sf.write(path, wave.astype(np.float32), SR)
                out[key] = str(path)
    return out


def episode(spk: str, with_validation: bool = True) -> Episode:
    def keys(lo: int, hi: int) -> tuple[tuple[str, ...], tuple[int, ...]]:
        items = [(f"toy/{spk}_{y}_{i}", y) for i in range(lo, hi) for y in (0, 1)]
        return tuple(k for k, _ in items), tuple(y for _, y in items)

    support, support_y = keys(0, 2)
    validation, validation_y = keys(2, 4) if with_validation else ((), ())
    query, query_y = keys(4, 7)
    return Episode(episode_id=f"binary/k4/{spk}/x/r0", protocol="binary", speaker=spk, k=4, repetition=0, seed=0,
                   classes=("not_x", "x"), target_emotion="x", support=support, support_labels=support_y,
                   query=query, query_labels=query_y, validation=validation, validation_labels=validation_y)


class Factory:
    def __init__(self) -> None:
        self.built = []

    def __call__(self):
        model = build_backbone(BackboneConfig(family="wav2vec2", source="tiny"))
        self.built.append(model)
        return model


CFG = FullFinetuneConfig(**CPU_SMALL)


def test_records_and_fresh_backbone_per_episode(paths):
    """Built from the registry like any method, scored by the one trial engine, one fresh backbone per episode."""
    factory = Factory()
    adapter = build_adapter("full_finetune", AdapterSpec(1, 2, audio=AudioInputs(factory, paths)),
                            dataclasses.asdict(CFG))
    assert isinstance(adapter, FullFinetune) and adapter.inputs == "audio" and adapter.per_episode
    index_of = {key: i for i, key in enumerate(paths)}  # audio methods read clips; the features are unused
    records = run_trials(adapter, [episode("s1"), episode("s2")], torch.zeros(len(paths), 1), index_of,
                         TrialTags("t", "none", 0), chunk=1)
    assert len(records) == 2 and len(factory.built) == 2
    assert factory.built[0] is not factory.built[1]
    for r in records:
        assert tuple(r) == RECORD_FIELDS
        assert r["algorithm"] == "full_finetune" and r["n_query"] == 6 and r["n_support"] == 4
        assert 0.0 <= r["accuracy"] <= 1.0 and r["seconds"] > 0


def test_best_epoch_and_logits(paths):
    logits, info = FullFinetune(Factory(), paths, CFG).run_episode(episode("s1"))
    assert logits.shape == (6, 2) and torch.isfinite(logits).all()
    assert 1 <= info["best_epoch"] <= CFG.epochs_small_k
    assert 0.0 <= info["val_macro_f1"] <= 1.0


def test_only_top_layer_and_head_train(paths):
    factory = Factory()
    fresh = build_backbone(BackboneConfig(family="wav2vec2", source="tiny"))
    _, info = FullFinetune(factory, paths, CFG).run_episode(episode("s1", with_validation=False))
    assert info["best_epoch"] == CFG.epochs_small_k  # no validation: the last epoch
    trained = factory.built[0]
    lower_t, lower_f = transformer_layers(trained)[0][0], transformer_layers(fresh)[0][0]
    top_t, top_f = transformer_layers(trained)[0][-1], transformer_layers(fresh)[0][-1]
    for a, b in zip(lower_t.parameters(), lower_f.parameters(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(trained.model.feature_extractor.conv_layers[0].conv.weight,
                       fresh.model.feature_extractor.conv_layers[0].conv.weight)
    assert any(not torch.equal(a, b) for a, b in zip(top_t.parameters(), top_f.parameters(), strict=True))


def test_missing_audio_names_the_key(paths):
    broken = dict(paths)
    broken["toy/s1_0_5"] = str(next(iter(paths.values()))) + ".missing.wav"
    with pytest.raises(MetalearnError, match="toy/s1_0_5") as err:
        FullFinetune(Factory(), broken, CFG).run_episode(episode("s1"))
    assert "\n" not in str(err.value)
    del broken["toy/s1_0_5"]
    with pytest.raises(MetalearnError, match="toy/s1_0_5"):
        FullFinetune(Factory(), broken, dataclasses.replace(CFG, epochs_small_k=1)).run_episode(episode("s1"))
