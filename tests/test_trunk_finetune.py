"""Fine-tuning the top layers on a cached trunk gives the from-audio results, computing each clip's trunk once."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import soundfile as sf
import torch

from metalearn.features.backbones import BackboneConfig, build_backbone, pad_batch
from metalearn.features.backbones.whisper import whisper_from_config
from metalearn.features.shared_trunk import TrunkCache, caches_trunk
from metalearn.fewshot.algorithms import AudioInputs
from metalearn.fewshot.algorithms.full_finetune import CPU_SMALL, FullFinetune, FullFinetuneConfig
from metalearn.fewshot.episodes import Episode

SR = 16_000
CFG = FullFinetuneConfig(**CPU_SMALL)


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, str]:
    """Two speakers x two classes x 7 clips of 0.2-0.5 s (unequal lengths: padded batches)."""
    root, rng, out = tmp_path_factory.mktemp("wavs"), np.random.default_rng(0), {}
    for spk in ("s1", "s2"):
        for label, freq in ((0, 220.0), (1, 1760.0)):
            for i in range(7):
                t = np.arange(int((0.2 + 0.05 * i) * SR)) / SR
                wave = 0.5 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(t.size)
                path = root / f"{spk}_{label}_{i}.wav"
                sf.write(path, wave.astype(np.float32), SR)
                out[f"toy/{spk}_{label}_{i}"] = str(path)
    return out


def episode(spk: str, shift: int = 0) -> Episode:
    def keys(ids: range) -> tuple[tuple[str, ...], tuple[int, ...]]:
        items = [(f"toy/{spk}_{y}_{(i + shift) % 7}", y) for i in ids for y in (0, 1)]
        return tuple(k for k, _ in items), tuple(y for _, y in items)

    (support, sy), (val, vy), (query, qy) = keys(range(0, 3)), keys(range(3, 5)), keys(range(5, 7))
    return Episode(episode_id=f"binary/k6/{spk}/x/r{shift}", protocol="binary", speaker=spk, k=6, repetition=shift,
                   seed=0, classes=("not_x", "x"), target_emotion="x", support=support, support_labels=sy,
                   query=query, query_labels=qy, validation=val, validation_labels=vy)


def whisper_tiny():
    return build_backbone(BackboneConfig(family="whisper", source="tiny"))


def test_cached_trunk_gives_the_from_audio_results(paths) -> None:
    episodes = [episode("s1"), episode("s2"), episode("s1", shift=2)]  # the third reuses s1's clips
    cached = FullFinetune(AudioInputs(whisper_tiny, paths), CFG)
    audio = FullFinetune(AudioInputs(whisper_tiny, paths), dataclasses.replace(CFG, trunk_cache_mb=0))
    for ep in episodes:
        (lc, ic), (la, ia) = cached.run_episode(ep), audio.run_episode(ep)
        assert ic["best_step"] == ia["best_step"]
        torch.testing.assert_close(lc, la, atol=1e-5, rtol=0)
        assert not torch.allclose(la, torch.zeros_like(la))  # it did train
    assert audio.trunks is None and cached.trunks is not None and cached.trunks.depth == 1
    assert cached.trunks.computed == len({k for ep in episodes for k in ep.support + ep.validation + ep.query})


def test_trunk_batch_continues_to_the_same_hidden_states() -> None:
    torch.manual_seed(0)
    backbone = whisper_from_config({"d_model": 32, "encoder_layers": 3, "encoder_attention_heads": 2,
                                    "encoder_ffn_dim": 64, "decoder_layers": 1, "decoder_attention_heads": 2,
                                    "decoder_ffn_dim": 64, "num_mel_bins": 80, "max_source_positions": 1500})
    waves = [torch.randn(n) for n in (4000, 9000, 6500)]
    cache = TrunkCache(backbone.eval(), depth=2, max_bytes=2**30, chunk=1)  # each clip alone
    with torch.no_grad():
        batch, lengths = pad_batch(waves)
        full = backbone(batch, lengths)
        out = backbone.forward_from(cache.batch(["a", "b", "c"], waves), 2)
    torch.testing.assert_close(out.lengths, full.lengths)
    for i, n in enumerate(full.lengths.tolist()):
        torch.testing.assert_close(out.hidden_states[2:, i, :n], full.hidden_states[2:, i, :n], atol=1e-5, rtol=0)


def test_the_cache_stays_within_its_bound_and_recomputes_what_it_dropped() -> None:
    backbone = whisper_tiny()
    waves = [torch.randn(n) for n in (4000, 8000, 6000, 5000)]
    per_clip = 4 * backbone.hidden_size * 13  # 4000 samples -> 13 frames of 4-byte states, the smallest clip
    cache = TrunkCache(backbone, depth=1, max_bytes=2 * per_clip)
    with torch.no_grad():
        first = [cache.batch([k], [w]).states[-1] for k, w in zip("abcd", waves, strict=True)]
        assert cache.bytes <= 2 * per_clip and len(cache.states) < 4
        again = cache.batch(["a"], [waves[0]]).states[-1]
    assert cache.computed == 5  # "a" was dropped and computed again, to the same values
    torch.testing.assert_close(again, first[0], atol=0, rtol=0)


def test_only_dropout_free_backbones_with_a_trunk_are_cached(paths) -> None:
    assert caches_trunk(whisper_tiny())
    noisy = whisper_tiny()
    noisy.encoder.config.dropout = 0.1
    assert not caches_trunk(noisy)
    ssl = FullFinetune(AudioInputs(lambda: build_backbone(BackboneConfig(family="wav2vec2", source="tiny")), paths),
                       dataclasses.replace(CFG, steps=1))
    assert not caches_trunk(build_backbone(BackboneConfig(family="wav2vec2", source="tiny")))
    ssl.run_episode(episode("s1"))
    assert ssl.trunks is None  # trained from audio
