"""Whisper's layer on packed clips equals the padded layer on every clip's rows, values and gradients; pre-finetuning
reads its cached trunk packed, with the padded path's pooled states and gradients."""

from __future__ import annotations

import pytest
import torch

from metalearn.features.backbones import pad_batch
from metalearn.features.backbones.pooling import masked_mean
from metalearn.features.backbones.whisper import whisper_from_config
from metalearn.features.backbones.whisper_packed import own_weights, pack, whisper_layer
from metalearn.pretune.model import MultiHeadClassifier

TINY = {"d_model": 32, "encoder_layers": 3, "encoder_attention_heads": 2, "encoder_ffn_dim": 64,
        "decoder_layers": 1, "decoder_attention_heads": 2, "decoder_ffn_dim": 64, "num_mel_bins": 80,
        "max_source_positions": 1500}
LENGTHS = (4000, 9000, 6500, 12000)  # samples: unequal, so the padded batch pads


def _backbone(dtype: torch.dtype = torch.float64):
    torch.manual_seed(0)
    return whisper_from_config(TINY).to(dtype)


def test_a_packed_layer_equals_the_padded_layer_on_each_clips_rows() -> None:
    layer = _backbone().encoder.layers[0].eval()
    torch.manual_seed(1)
    lengths = [7, 15, 3, 11]
    x = torch.zeros(len(lengths), max(lengths), 32, dtype=torch.float64)
    for i, n in enumerate(lengths):
        x[i, :n] = torch.randn(n, 32, dtype=torch.float64)
    keep = torch.arange(max(lengths))[None] < torch.tensor(lengths)[:, None]
    mask = torch.zeros(keep.shape, dtype=x.dtype).masked_fill(~keep, torch.finfo(x.dtype).min)[:, None, None, :]
    padded = layer(x, mask)
    padded = padded[0] if isinstance(padded, tuple) else padded
    packed = pack([[(x[i, :n], n) for i, n in enumerate(lengths)]])
    out = whisper_layer(layer, own_weights(layer), packed, packed.x)
    start = 0
    for i, n in enumerate(lengths):
        torch.testing.assert_close(out[0, start : start + n], padded[i, :n], atol=1e-12, rtol=0)
        start += n
    (grad_packed,) = torch.autograd.grad(torch.bmm(packed.pool, out).square().sum(), layer.fc1.weight)
    (grad_padded,) = torch.autograd.grad(masked_mean(padded, torch.tensor(lengths)).square().sum(), layer.fc1.weight)
    torch.testing.assert_close(grad_packed, grad_padded, atol=1e-12, rtol=0)


@pytest.mark.parametrize("layer", [2, 3, "mix"])
def test_pretuning_reads_its_cached_trunk_packed_with_the_padded_values(layer) -> None:
    """The head reads state 2 (layer 2 trains above a cached trunk of 1), the last state (then the final norm) or a
    mix of every state; the packed path and the padded one (``pack_clips`` false) give equal pooled states and
    gradients."""
    torch.manual_seed(2)
    waves = [torch.randn(n) for n in LENGTHS]  # float32: the mel front end's precision
    batch, lengths = pad_batch(waves)
    keys = [f"clip{i}" for i in range(len(waves))]

    def run(packed: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model = MultiHeadClassifier(_backbone(torch.float32), {"a": ["x", "y"]}, layer=layer)
        assert model.cache_trunk(1, 2**30, pack_clips=packed)
        model.backbone.encoder.layers[0].requires_grad_(False)
        pooled = model.pooled(batch, lengths, keys)
        pooled.square().sum().backward()
        grads = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
        return pooled.detach(), grads

    (packed, packed_grads), (padded, padded_grads) = run(True), run(False)
    assert packed.shape == padded.shape == ((4 if layer == "mix" else 1), len(waves), 32)
    torch.testing.assert_close(packed, padded, atol=1e-5, rtol=0)
    assert packed_grads.keys() == padded_grads.keys() and any("layers.1." in k for k in packed_grads)
    for name, grad in packed_grads.items():
        torch.testing.assert_close(grad, padded_grads[name], atol=1e-4, rtol=1e-4, msg=name)
