"""Per-episode fine-tuning of a tiny backbone from audio (CPU_SMALL preset): what trains, what runs, refusals."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import soundfile as sf
import torch

from metalearn.features.backbones import BackboneConfig, build_backbone
from metalearn.features.backbones.tiny import WHISPER_TINY
from metalearn.features.backbones.whisper import whisper_from_config
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
    def __init__(self, family: str = "wav2vec2") -> None:
        self.family, self.built = family, []

    def __call__(self):
        model = build_backbone(BackboneConfig(family=self.family, source="tiny"))
        self.built.append(model)
        return model


CFG = FullFinetuneConfig(**CPU_SMALL)


def test_records_and_weights_reset_per_episode(paths):
    """Built from the registry like any method, scored by the one trial engine; every episode starts from the
    variant's weights (one backbone, its trainable weights reset), so an episode scored again gives its logits."""
    factory = Factory()
    adapter = build_adapter("full_finetune", AdapterSpec(1, 2, audio=AudioInputs(factory, paths)),
                            dataclasses.asdict(CFG))
    assert isinstance(adapter, FullFinetune) and adapter.inputs == "audio" and adapter.per_episode
    index_of = {key: i for i, key in enumerate(paths)}  # audio methods read clips; the features are unused
    records = run_trials(adapter, [episode("s1"), episode("s2")], torch.zeros(len(paths), 1), index_of,
                         TrialTags("t", "none", 0), chunk=1)
    assert len(records) == 2 and len(factory.built) == 1
    for r in records:
        assert tuple(r) == RECORD_FIELDS
        assert r["algorithm"] == "full_finetune" and r["n_query"] == 6 and r["n_support"] == 4
        assert 0.0 <= r["accuracy"] <= 1.0 and r["seconds"] > 0
    first, _ = adapter.run_episode(episode("s1"))
    again, _ = adapter.run_episode(episode("s1"))
    torch.testing.assert_close(first, again, atol=0, rtol=0)


def test_selection_and_logits(paths):
    logits, info = FullFinetune(AudioInputs(Factory(), paths), CFG).run_episode(episode("s1"))
    assert logits.shape == (6, 2) and torch.isfinite(logits).all()
    assert info["best_step"] in range(CFG.eval_every, CFG.steps + 1, CFG.eval_every)
    _, info = FullFinetune(AudioInputs(Factory(), paths), CFG).run_episode(episode("s1", with_validation=False))
    assert info["best_step"] == CFG.steps  # no validation: the last step


def test_only_the_layers_ending_at_the_state_train_and_none_above_runs(paths):
    """Whisper with 3 layers, feature state 2, trainable_layers 1: layer 2 (index 1) trains, layers 1 and 3 stay,
    and layer 3 never runs."""
    def three_layers():
        torch.manual_seed(0)
        return whisper_from_config({**WHISPER_TINY, "encoder_layers": 3})

    adapter = FullFinetune(AudioInputs(three_layers, paths, layer="2"), CFG)
    adapter.run_episode(episode("s1"))
    calls = []
    top = transformer_layers(adapter.backbone)[0][2]
    top.register_forward_hook(lambda *_: calls.append(1))
    adapter.run_episode(episode("s2"))
    fresh = three_layers()
    trained, untouched = transformer_layers(adapter.backbone)[0], transformer_layers(fresh)[0]
    for i, changed in ((0, False), (1, True), (2, False)):
        same = all(torch.equal(a, b) for a, b in zip(trained[i].parameters(), untouched[i].parameters(), strict=True))
        assert same != changed, i
    assert not calls and adapter.trunks is not None and adapter.trunks.depth == 1


def test_refusals_are_one_line(paths):
    for layer in ("mean", "mix", "clap"):
        with pytest.raises(MetalearnError, match=f"feature is '{layer}'") as err:
            build_adapter("full_finetune", AdapterSpec(1, 2, audio=AudioInputs(Factory(), paths, layer=layer)))
        assert "\n" not in str(err.value)
    too_deep = FullFinetune(AudioInputs(Factory("whisper"), paths, layer="1"), dataclasses.replace(CFG,
                                                                                                  trainable_layers=2))
    with pytest.raises(MetalearnError, match="trainable_layers 2 exceeds the feature's state 1"):
        too_deep.run_episode(episode("s1"))
    with pytest.raises(MetalearnError, match="standardize 'zscore'"):
        FullFinetune(AudioInputs(Factory(), paths), dataclasses.replace(CFG, standardize="zscore"))


def test_missing_audio_names_the_key(paths):
    broken = dict(paths)
    broken["toy/s1_0_5"] = str(next(iter(paths.values()))) + ".missing.wav"
    with pytest.raises(MetalearnError, match="toy/s1_0_5") as err:
        FullFinetune(AudioInputs(Factory(), broken), CFG).run_episode(episode("s1"))
    assert "\n" not in str(err.value)
    del broken["toy/s1_0_5"]
    with pytest.raises(MetalearnError, match="toy/s1_0_5"):
        FullFinetune(AudioInputs(Factory(), broken), CFG).run_episode(episode("s1"))


def test_backbone_steps_stop_the_layers_and_keep_training_the_head(paths):
    """With backbone_steps = 2 of 6 steps, the layers end as after 2 joint steps (the same first 2 steps), while
    the head trains on: its query logits differ from the 2-step run's."""
    def run(cfg: FullFinetuneConfig) -> tuple[torch.Tensor, list[torch.Tensor]]:
        adapter = FullFinetune(AudioInputs(Factory("whisper"), paths, layer="2"), cfg)
        logits, _ = adapter.run_episode(episode("s1", with_validation=False))
        return logits, [p.detach().clone() for p in adapter.backbone.parameters() if p.requires_grad]

    base = dataclasses.replace(CFG, trainable_layers=1, eval_every=1)
    capped, capped_layers = run(dataclasses.replace(base, steps=6, backbone_steps=2))
    short, short_layers = run(dataclasses.replace(base, steps=2))
    full, full_layers = run(dataclasses.replace(base, steps=6))
    assert all(torch.equal(a, b) for a, b in zip(capped_layers, short_layers, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(full_layers, short_layers, strict=True))
    assert not torch.equal(capped, short)


def test_length_buckets_hold_every_clip_once_in_length_order():
    from metalearn.fewshot.algorithms.full_finetune import length_buckets

    lengths = [5, 1, 4, 1, 9, 2, 7]
    buckets = length_buckets(lengths, 3)
    assert sorted(i for b in buckets for i in b) == list(range(7)) and max(map(len, buckets)) == 3
    flat = [lengths[i] for b in buckets for i in b]
    assert flat == sorted(flat)
    assert length_buckets(lengths, 7) == [list(range(7))]


@pytest.mark.parametrize("grad", [False, True])
def test_features_in_length_buckets_equal_one_padded_batch(tmp_path, monkeypatch, grad):
    """Clips of 6 lengths, run as 3 batches of 2 or as one: the same features (each clip's state is its own)."""
    import metalearn.fewshot.algorithms.full_finetune as ff

    rng, paths = np.random.default_rng(1), {}
    for i, seconds in enumerate((0.7, 0.2, 0.5, 0.3, 0.6, 0.25)):
        paths[f"toy/c{i}"] = str(tmp_path / f"c{i}.wav")
        sf.write(paths[f"toy/c{i}"], (0.3 * rng.standard_normal(int(seconds * SR))).astype(np.float32), SR)
    adapter = FullFinetune(AudioInputs(Factory("whisper"), paths, layer="2"), CFG)
    adapter.prepare()
    keys = list(paths)
    waves = adapter.load(keys)

    def features(size: int) -> torch.Tensor:
        monkeypatch.setattr(ff, "BUCKET", size)
        monkeypatch.setattr(ff, "EVAL_CHUNK", size)
        with torch.set_grad_enabled(grad):
            return adapter.features(keys, waves).detach()

    apart, together = features(2), features(100)
    assert apart.shape == (6, adapter.backbone.hidden_size)
    torch.testing.assert_close(apart, together, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(together[0], together[1])  # clips differ: a permuted output would fail
