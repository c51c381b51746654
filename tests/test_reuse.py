"""Variants with identical features are scored once (metalearn.run.reuse): the copies equal what scoring
them would give, methods that read more than the features are always scored, and skips are replayed."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import pytest
import torch

from metalearn.configs.load import load_config
from metalearn.fewshot.episodes import Episode
from metalearn.report.records import VOLATILE
from metalearn.run import runner, scoring
from metalearn.run.grid import Unit
from metalearn.run.reuse import Reuse, features_digest
from tests.conftest import overrides, tiny_corpora
from tests.fixtures import make_rows

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see tests/conftest.py


def _episode(i: int) -> Episode:
    return Episode(f"nway/k1/s/r{i}", "nway", "s", 1, i, 0, ("neutral", "happy"), "", ("a", "b"), (0, 1), ("c", "d"),
                   (0, 1))


def _units(variant: str, algorithm: str) -> list[Unit]:
    return [Unit(variant, 0, 0, algorithm, 0, (_episode(i),)) for i in range(2)]


class Scorer:
    def __init__(self, lost: bool = False) -> None:
        self.calls, self.lost = 0, lost

    def __call__(self, units: list[Unit]):
        def score(skip):
            self.calls += 1
            for u in units:
                if self.lost:
                    skip(u, [(u.episodes[0], "no embedding for c")])
                yield u, [{"pretune": u.variant, "algorithm": u.algorithm, "episode_id": e.episode_id, "accuracy": 0.5}
                          for e in u.episodes]
        return score


def _run(reuse: Reuse, units: list[Unit], digest: str, scorer: Scorer, skipped: list) -> list[dict]:
    return [r for _, records in reuse.scored(units, digest, scorer(units), lambda u, lost: skipped.append((u, lost)))
            for r in records]


def test_same_features_scored_once_and_copied_with_the_variant_name() -> None:
    reuse, scorer = Reuse(["finetune"]), Scorer()
    first = _run(reuse, _units("none", "finetune"), "d1", scorer, [])
    second = _run(reuse, _units("pft-x", "finetune"), "d1", scorer, [])
    assert scorer.calls == 1
    assert [dict(r, pretune="none") for r in second] == first and {r["pretune"] for r in second} == {"pft-x"}
    _run(reuse, _units("pft-y", "finetune"), "other features", scorer, [])
    assert scorer.calls == 2


def test_methods_that_read_the_variant_are_always_scored() -> None:
    reuse, scorer = Reuse(["full_finetune"]), Scorer()
    for variant in ("none", "pft-x"):
        _run(reuse, _units(variant, "full_finetune"), "d1", scorer, [])
    assert scorer.calls == 2


def test_skips_are_replayed_for_the_copies() -> None:
    reuse, scorer, skipped = Reuse(["finetune"]), Scorer(lost=True), []
    _run(reuse, _units("none", "finetune"), "d1", scorer, skipped)
    _run(reuse, _units("pft-x", "finetune"), "d1", scorer, skipped)
    assert scorer.calls == 1 and [u.variant for u, _ in skipped] == ["none", "none", "pft-x", "pft-x"]


def test_digest_sees_every_bit_and_the_rows() -> None:
    rows, x = make_rows()[:3], torch.zeros(3, 4)
    y = x.clone()
    y[2, 3] = 1e-30
    assert features_digest(rows, x) == features_digest(rows, x.clone())
    assert features_digest(rows, x) != features_digest(rows, y)
    assert features_digest(rows, x) != features_digest(rows[::-1], x)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_run_copies_a_twin_variant_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int) -> None:
    """A second variant with the very same features: its records equal the ones scoring it would give; scored once
    (counted in this process with workers=1; with 2 workers the copies are made here, the originals forked)."""
    tiny_corpora(tmp_path / "data")
    real_prepare = runner.prepare_variants

    def with_twin(cfg, train=True):
        variants = real_prepare(cfg, train=train)
        return {**variants, "twin": dataclasses.replace(variants["none"], name="twin")}

    monkeypatch.setattr(runner, "prepare_variants", with_twin)
    monkeypatch.setattr(runner, "variant_names", lambda cfg: ["none", "twin"])
    calls = []
    real_score = scoring.score_group

    def counting(cfg, units, *args, **kwargs):
        calls.append(units[0].variant)
        return real_score(cfg, units, *args, **kwargs)

    monkeypatch.setattr(scoring, "score_group", counting)
    cfg = load_config(None, overrides(tmp_path, "run", f"workers={workers}",
                                      algorithms=["finetune", "fomaml"], steps=5, repetitions=1))
    result = runner.run_experiment(cfg)
    assert result.complete and set(calls) == ({"none"} if workers == 1 else set())  # forked calls are not seen
    with open(tmp_path / "run" / "trials.csv", newline="") as f:
        rows = [{k: v for k, v in r.items() if k not in VOLATILE} for r in csv.DictReader(f)]
    twin = [dict(r, pretune="none") for r in rows if r["pretune"] == "twin"]
    assert twin and twin == [r for r in rows if r["pretune"] == "none"]
    # every record names the features it read: the copies say whose they are, and the last state (features.layer -1)
    assert {r["features_of"] for r in rows} == {"none"}
    layers = {r["layer"] for r in rows}
    assert len(layers) == 1 and layers.pop().isdigit()
