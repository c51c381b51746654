"""The trial engine: one record per episode with the contract's fields, chunking invariance, summaries."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metalearn.data.manifest import utterance_key
from metalearn.features.featurize import select_features
from metalearn.fewshot.algorithms.simpleshot import SimpleShot
from metalearn.fewshot.episodes import binary_episodes, nway_episodes
from metalearn.fewshot.trials import RECORD_FIELDS, TrialTags, group_by_shape, run_trials
from metalearn.report.summary import summarize
from metalearn.util.intervals import t_interval
from tests.fixtures import EMOTIONS, make_rows

DESIGN_FIELDS = ("run", "pretune", "algorithm", "protocol", "k", "speaker", "target_emotion", "seed", "accuracy",
                 "macro_f1", "weighted_f1", "uar", "n_support", "n_query", "seconds")


@pytest.fixture(scope="module")
def data():
    rows = make_rows(counts=(10, 3, 6))
    rng = np.random.default_rng(0)
    means = {(s, e): rng.normal(scale=3.0, size=16) for s in ("0011", "0012", "0013") for e in EMOTIONS}
    x = torch.tensor(np.stack([means[(u.speaker, u.emotion)] + rng.normal(size=16) for u in rows]),
                     dtype=torch.float32)
    return rows, x, {utterance_key(u): i for i, u in enumerate(rows)}


def test_records_have_the_contract_fields_and_beat_chance(data):
    rows, x, index_of = data
    eps, skipped = nway_episodes(rows, ["0011", "0012", "0013"], k=3, repetitions=2, seed=0)
    assert not skipped
    records = run_trials(SimpleShot(16), eps, x, index_of, TrialTags("r", "none", 0))
    assert len(records) == len(eps) == 6
    assert set(DESIGN_FIELDS) <= set(records[0]) and tuple(records[0]) == RECORD_FIELDS
    assert {r["episode_id"] for r in records} == {e.episode_id for e in eps}
    assert np.mean([r["accuracy"] for r in records]) > 0.8  # chance is 0.2
    assert all(r["n_support"] == 15 and r["n_query"] == 30 and r["seconds"] > 0 for r in records)


def test_chunking_does_not_change_scores(data):
    rows, x, index_of = data
    eps, _ = binary_episodes(rows, ["0011", "0012", "0013"], EMOTIONS, ks=(2, 4), repetitions=2, seed=1)
    a = run_trials(SimpleShot(16), eps, x, index_of, TrialTags("r", "none", 0), chunk=512)
    b = run_trials(SimpleShot(16), eps, x, index_of, TrialTags("r", "none", 0), chunk=3)
    key = lambda r: r["episode_id"]  # noqa: E731
    for ra, rb in zip(sorted(a, key=key), sorted(b, key=key), strict=True):
        assert ra["macro_f1"] == pytest.approx(rb["macro_f1"]) and ra["accuracy"] == pytest.approx(rb["accuracy"])


def test_group_by_shape_never_mixes_shapes(data):
    rows, _, _ = data
    eps, _ = binary_episodes(rows, ["0011", "0012"], EMOTIONS[:2], ks=(2, 4, 6), repetitions=3, seed=0)
    groups = group_by_shape(eps, chunk=4)
    assert sum(len(g) for g in groups) == len(eps)
    for g in groups:
        assert len({(e.protocol, len(e.support), len(e.classes)) for e in g}) == 1 and len(g) <= 4


def test_summary_is_the_t_interval_over_per_speaker_means():
    values = {"0011": (0.5, 0.7), "0012": (0.6, 0.6), "0013": (0.9, 0.8)}
    records = [{"pretune": "none", "algorithm": "a", "protocol": "binary", "k": 4, "speaker": s, "accuracy": v,
                "macro_f1": v / 2, "uar": v, "weighted_f1": v} for s, vs in values.items() for v in vs]
    (row,) = summarize(records)
    mean, half, n = t_interval([np.mean(vs) for vs in values.values()])
    assert (row["n_trials"], row["n_speakers"]) == (6, n) == (6, 3)
    assert row["accuracy_mean"] == pytest.approx(mean) and row["accuracy_ci95"] == pytest.approx(half)
    assert row["accuracy_ci95"] != pytest.approx(t_interval([v for vs in values.values() for v in vs])[1])
    assert row["macro_f1_mean"] == pytest.approx(mean / 2)


def test_select_features():
    values = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    assert torch.equal(select_features(values, 1), torch.from_numpy(values[:, 1]))
    assert torch.allclose(select_features(values, "mean"), torch.from_numpy(values.mean(axis=1)))
