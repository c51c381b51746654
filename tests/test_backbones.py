"""Backbones: hidden-state shapes and lengths with padding, pooling, Whisper's two input modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import WhisperConfig, WhisperFeatureExtractor
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from metalearn.features.backbones import BackboneConfig, build_backbone, pad_batch
from metalearn.features.backbones.pooling import masked_mean
from metalearn.features.backbones.tiny import WHISPER_TINY
from metalearn.features.backbones.whisper import LogMel, WhisperBackbone
from metalearn.util.errors import MetalearnError

SSL_FAMILIES = ("wav2vec2", "wavlm", "hubert", "data2vec-audio")


def _waves(lengths=(8000, 5000, 3200), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [0.1 * torch.randn(n, generator=g) for n in lengths]


@pytest.mark.parametrize("family", SSL_FAMILIES + ("whisper",))
def test_shapes_and_lengths(family):
    torch.manual_seed(0)
    bb = build_backbone(BackboneConfig(family=family, source="tiny"))
    batch, lengths = pad_batch(_waves())
    with torch.no_grad():
        out = bb(batch, lengths)
    n_states, b, f, d = out.hidden_states.shape
    assert (n_states, b, d) == (bb.num_states, 3, bb.hidden_size)
    assert out.lengths.tolist()[0] == f and out.lengths[0] > out.lengths[1] > out.lengths[2]
    for i, w in enumerate(_waves()):  # each utterance's valid length is its length alone
        with torch.no_grad():
            alone = bb(w[None], torch.tensor([w.shape[0]]))
        assert alone.lengths.item() == out.lengths[i].item()


def test_whisper_trimmed_does_not_depend_on_batch_mates():
    """Whisper in trimmed mode masks padding, so each utterance gets exactly its solo states.

    (The SSL models' stacked positional convolutions see padding near the end of a clip, as in
    transformers; extraction batches clips of similar length to keep that small.)
    """
    torch.manual_seed(0)
    bb = build_backbone(BackboneConfig(family="whisper", source="tiny"))
    waves = _waves()
    batch, lengths = pad_batch(waves)
    with torch.no_grad():
        out = bb(batch, lengths)
        pooled = masked_mean(out.hidden_states, out.lengths)
        for i, w in enumerate(waves):
            alone = bb(w[None], torch.tensor([w.shape[0]]))
            solo = masked_mean(alone.hidden_states, alone.lengths)[:, 0]
            torch.testing.assert_close(pooled[:, i], solo, atol=1e-4, rtol=1e-4)


def test_masked_mean_ignores_padding():
    h = torch.randn(3, 2, 5, 4)
    lengths = torch.tensor([5, 2])
    h2 = h.clone()
    h2[:, 1, 2:] = 1e6  # garbage in the padded frames
    out = masked_mean(h2, lengths)
    torch.testing.assert_close(out[:, 0], h[:, 0].mean(dim=1))
    torch.testing.assert_close(out[:, 1], h[:, 1, :2].mean(dim=1))


def _whisper_encoder():
    torch.manual_seed(0)
    return WhisperEncoder(WhisperConfig(**WHISPER_TINY)).eval()


def test_log_mel_matches_the_feature_extractor():
    wave = _waves((24000,))[0]
    ours = LogMel()(wave)
    theirs = WhisperFeatureExtractor()(wave.numpy(), sampling_rate=16000, return_tensors="np",
                                        padding=False).input_features[0]
    np.testing.assert_allclose(ours.numpy(), theirs[:, : ours.shape[1]], atol=1e-4)


def test_whisper_window_mode_equals_transformers():
    enc = _whisper_encoder()
    waves = _waves((30000, 16000))
    batch, lengths = pad_batch(waves)
    with torch.no_grad():
        out = WhisperBackbone(enc, "window")(batch, lengths)
        feats = WhisperFeatureExtractor()([w.numpy() for w in waves], sampling_rate=16000,
                                          return_tensors="pt").input_features
        ref = enc(feats).last_hidden_state
    assert out.hidden_states.shape[2] == 1500
    torch.testing.assert_close(out.hidden_states[-1], ref, atol=1e-5, rtol=1e-5)
    assert out.lengths.tolist() == [94, 50]  # frames that hold speech, used for pooling


def test_whisper_trimmed_uses_only_the_utterance_frames():
    enc = _whisper_encoder()
    w = _waves((16000,))[0]
    with torch.no_grad():
        out = WhisperBackbone(enc, "trimmed")(w[None], torch.tensor([16000]))
    assert out.hidden_states.shape[2] == 50 and out.lengths.tolist() == [50]


def test_from_pretrained_round_trip(tmp_path):
    torch.manual_seed(0)
    bb = build_backbone(BackboneConfig(family="wavlm", source="tiny"))
    bb.model.save_pretrained(tmp_path / "ckpt")
    again = build_backbone(BackboneConfig(source=str(tmp_path / "ckpt")))
    batch, lengths = pad_batch(_waves())
    with torch.no_grad():
        torch.testing.assert_close(bb(batch, lengths).hidden_states, again(batch, lengths).hidden_states)


def test_bad_configs_are_one_line_errors(tmp_path):
    with pytest.raises(MetalearnError, match="unknown backbone family 'bert'"):
        build_backbone(BackboneConfig(family="bert", source="tiny"))
    with pytest.raises(MetalearnError, match="could not be loaded"):
        build_backbone(BackboneConfig(source=str(tmp_path / "nothing-here")))
    with pytest.raises(ValueError, match="whisper input mode"):
        WhisperBackbone(_whisper_encoder(), "padded")


@pytest.mark.parametrize("family", ["whisper", "wav2vec2", "wavlm"])
def test_keeping_the_first_layers_keeps_their_states(family):
    """backbone.layers = n: states 0..n are the full model's (no final norm moves onto state n), nothing above."""
    full = build_backbone(BackboneConfig(family=family, source="tiny"))
    cut = build_backbone(BackboneConfig(family=family, source="tiny", layers=1))
    waves, lengths = pad_batch([torch.randn(8000), torch.randn(5000)])
    with torch.no_grad():
        a, b = full(waves, lengths), cut(waves, lengths)
    assert cut.num_states == 2 and b.hidden_states.shape[0] == 2
    assert torch.allclose(a.hidden_states[:2], b.hidden_states, atol=1e-6)
    assert torch.equal(a.lengths, b.lengths)
    assert sum(p.numel() for p in cut.parameters()) < sum(p.numel() for p in full.parameters())
    assert cut.name != full.name  # the embedding cache key differs


def test_keeping_all_layers_changes_nothing_and_bad_counts_are_one_line():
    same = build_backbone(BackboneConfig(source="tiny", layers=2))
    assert same.name == build_backbone(BackboneConfig(source="tiny")).name and same.num_states == 3
    for bad in (0, 3, -1):
        with pytest.raises(MetalearnError, match=r"backbone.layers .*expected an integer in 1\.\.2"):
            build_backbone(BackboneConfig(source="tiny", layers=bad))


def test_keeping_layers_of_a_stable_layer_norm_model_drops_its_final_norm():
    from metalearn.features.backbones.hf_ssl import ssl_from_config
    from metalearn.features.backbones.tiny import SSL_TINY

    torch.manual_seed(0)
    full = ssl_from_config(dict(SSL_TINY, do_stable_layer_norm=True, feat_extract_norm="layer")).eval()
    cut = ssl_from_config(dict(SSL_TINY, do_stable_layer_norm=True, feat_extract_norm="layer")).eval()
    cut.load_state_dict(full.state_dict())
    cut.keep_layers(1)
    waves, lengths = pad_batch([torch.randn(8000)])
    with torch.no_grad():
        assert torch.allclose(full(waves, lengths).hidden_states[:2], cut(waves, lengths).hidden_states, atol=1e-6)
