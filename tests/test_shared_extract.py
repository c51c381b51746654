"""Variants that froze their lower layers share one forward of those layers, with the same embeddings."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from metalearn.features.backbones import BackboneConfig, build_backbone
from metalearn.features.embeddings import EmbeddingConfig, extract
from metalearn.features.shared_trunk import shared_layers
from tests.reference_impls import extract_variants
from tests.test_embeddings import _rows


def _variant(base, top: int):
    """``base`` with its top ``top`` layers (and final norm) changed, as pre-finetuning with trainable_layers=top."""
    other = copy.deepcopy(base)
    with torch.no_grad():
        for layer in other.encoder.layers[len(other.encoder.layers) - top:]:
            for p in layer.parameters():
                p.add_(0.05 * torch.randn_like(p))
    other.name = f"{base.name}@top{top}"
    return other


@pytest.fixture()
def base():
    torch.manual_seed(0)
    return build_backbone(BackboneConfig(family="whisper", source="tiny")).eval()


def test_shared_depth_counts_identical_lower_layers(base) -> None:
    n = base.num_states - 1
    assert shared_layers(base, copy.deepcopy(base)) == n
    assert shared_layers(base, _variant(base, 1)) == n - 1
    assert shared_layers(base, _variant(base, n)) == 0
    other_front = copy.deepcopy(base)
    with torch.no_grad():
        other_front.encoder.conv1.weight.add_(1.0)
    assert shared_layers(base, other_front) is None
    ssl = build_backbone(BackboneConfig(family="wav2vec2", source="tiny"))
    assert shared_layers(base, ssl) is None


def test_shared_trunk_gives_the_embeddings_of_separate_extraction(base, tmp_path) -> None:
    rows = _rows(tmp_path / "wav")
    variants = [base, _variant(base, 1), _variant(base, 2)]
    shared_cfg = EmbeddingConfig(cache_dir=str(tmp_path / "shared"), batch_seconds=1.0, max_batch=4)
    alone_cfg = EmbeddingConfig(cache_dir=str(tmp_path / "alone"), batch_seconds=1.0, max_batch=4)
    shared = extract_variants(rows, variants, shared_cfg)
    assert [e.stats["extracted"] for e in shared] == [0, 0, 0]  # all filled by the shared pass
    for together, backbone in zip(shared, variants, strict=True):
        alone = extract(rows, backbone, alone_cfg)
        np.testing.assert_allclose(together.values, alone.values, rtol=0, atol=1e-6)
    assert not np.allclose(shared[0].values[:, -1], shared[1].values[:, -1])  # the top layers do differ
    frozen = base.num_states - 2  # states 0 .. n - 2 come from the layers variant 2 left frozen
    np.testing.assert_array_equal(shared[0].values[:, :frozen], shared[2].values[:, :frozen])
    assert not np.allclose(shared[0].values[:, frozen], shared[2].values[:, frozen])
