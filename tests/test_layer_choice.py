"""The feature layer chosen on validation speakers (features.choose_layer): recorded, deterministic, resumable,
and blind to test speakers.

Leakage, in the spirit of tests/test_leakage.py: a speaker's embeddings (every hidden state) are replaced by
large noise and the choice is made again. A fold's choice and its scores must not change when the fold's test
speakers are poisoned, and must change when its validation speaker is (the only speaker it is scored on) or
its meta-training speaker is (standardisation is fitted on it). Tiny corpus: 4 speakers, 2 folds of
2 test / 1 validation / 1 meta-training speakers; the tiny backbone has 3 hidden states.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from metalearn.configs.load import load_config
from metalearn.data.corpus_config import prepare_manifest
from metalearn.features.backbones import BackboneConfig
from metalearn.pretune.variant import PretuneVariant
from metalearn.report.records import read_trials
from metalearn.run import layer_choice, scoring
from metalearn.run.draw import build_episodes
from metalearn.run.layer_choice import choose_layers, layers_table, pick, unchanged
from metalearn.run.runner import run_experiment, speaker_folds
from metalearn.run.stages import prepare_variants
from metalearn.util.errors import MetalearnError
from tests.conftest import overrides, tiny_corpora

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see tests/conftest.py


TINY = {"meta_train": False}  # the tiny run's options (tests/conftest.py)
CHOOSE = "features.choose_layer=true"  # the feature layer chosen per fold


@dataclasses.dataclass
class Setup:
    base: Path
    cfg: object
    rows: list
    folds: list
    variants: dict
    episodes: dict

    def choose(self, out: str, cfg=None) -> tuple[dict, list[dict]]:
        folder = self.base / out
        folder.mkdir(exist_ok=True)
        chosen = choose_layers(cfg or self.cfg, self.variants, self.rows, self.folds, self.episodes, folder)
        return chosen, json.loads((folder / "layers.json").read_text())


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    base = tmp_path_factory.mktemp("layers")
    tiny_corpora(base / "data")
    cfg = load_config(None, overrides(base, "unused", CHOOSE, **TINY))
    rows = prepare_manifest(cfg.data.target, cfg.data.manifests_dir)
    speakers = sorted({u.speaker for u in rows})
    (base / "episodes").mkdir()
    episodes = {s: build_episodes(cfg, rows, speakers, s, base / "episodes") for s in cfg.seeds}
    return Setup(base, cfg, rows, speaker_folds(cfg, speakers), prepare_variants(cfg), episodes)


@pytest.fixture(scope="module")
def clean(setup: Setup) -> list[dict]:
    return setup.choose("clean")[1]


def _poisoned(setup: Setup, monkeypatch: pytest.MonkeyPatch, out: str, speakers: set[str],
              spared: int | None = None) -> list[dict]:
    """The choice with ``speakers``' embeddings replaced by noise in every hidden state but ``spared``."""
    real = layer_choice.variant_embeddings

    def poison(cfg, variant, rows):
        kept, values = real(cfg, variant, rows)
        values = values.copy()
        noise = 100 + 100 * np.random.default_rng(1).standard_normal(values.shape).astype(values.dtype)
        layers = [i for i in range(values.shape[1]) if i != spared]
        bad = np.array([u.speaker in speakers for u in kept])
        values[np.ix_(bad, layers)] = noise[np.ix_(bad, layers)]
        return kept, values

    monkeypatch.setattr(layer_choice, "variant_embeddings", poison)
    return setup.choose(out)[1]


def test_every_fold_records_the_best_layer_of_its_scores(setup: Setup, clean: list[dict]) -> None:
    assert [(e["variant"], e["fold"]) for e in clean] == [("none", 0), ("none", 1)]
    for e, fold in zip(clean, setup.folds, strict=True):
        scores = {int(k): v for k, v in e["scores"].items()}
        assert sorted(scores) == [0, 1, 2] == e["candidates"]
        assert e["layer"] == pick(scores) and scores[e["layer"]] == max(scores.values())
        assert e["validation"] == list(fold.validation) and e["meta_train"] == list(fold.meta_train)
        assert all(0 <= v <= 1 for v in scores.values())
    table = (setup.base / "clean" / "layers.md").read_text()
    assert f"| none | none (untouched) | layer {clean[0]['layer']} (" in table


def test_the_choice_is_deterministic(setup: Setup, clean: list[dict]) -> None:
    setup.choose("again")
    assert (setup.base / "again" / "layers.json").read_bytes() == (setup.base / "clean" / "layers.json").read_bytes()


@pytest.mark.parametrize("fold", [0, 1])
def test_test_speakers_never_change_their_folds_choice(setup: Setup, clean: list[dict], fold: int,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    poisoned = _poisoned(setup, monkeypatch, f"poison-test{fold}", set(setup.folds[fold].test))
    assert poisoned[fold] == clean[fold]
    assert poisoned[1 - fold] != clean[1 - fold]  # the same speakers validate or meta-train the other fold


def test_the_validation_speaker_decides_the_choice(setup: Setup, clean: list[dict],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Noise in every layer of fold 0's validation speaker but one unchosen layer: that layer wins."""
    spared = min({0, 1, 2} - {clean[0]["layer"]})
    poisoned = _poisoned(setup, monkeypatch, "poison-validation", set(setup.folds[0].validation), spared)
    assert poisoned[0]["layer"] == spared != clean[0]["layer"]
    assert poisoned[0]["scores"][str(spared)] == clean[0]["scores"][str(spared)]


def test_the_meta_training_speaker_reaches_the_scores(setup: Setup, clean: list[dict],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Standardisation is fitted on it: the poison would show if test speakers were read."""
    poisoned = _poisoned(setup, monkeypatch, "poison-meta-train", set(setup.folds[0].meta_train))
    assert poisoned[0]["scores"] != clean[0]["scores"]


def test_choices_are_read_back_and_refused_under_other_settings(setup: Setup, clean: list[dict],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    setup.choose("resumed")

    def never(*args, **kwargs):
        raise AssertionError("scored again")

    monkeypatch.setattr(layer_choice, "score_group", never)
    chosen, entries = setup.choose("resumed")
    assert entries == clean and chosen == {("none", e["fold"]): e["layer"] for e in clean}
    other = dataclasses.replace(setup.cfg, features=dataclasses.replace(setup.cfg.features, candidates=[0, -1]))
    with pytest.raises(MetalearnError, match="candidates"):
        setup.choose("resumed", other)
    path = setup.base / "resumed" / "layers.json"
    path.write_text(json.dumps([{**e, "validation": ["someone"]} for e in clean]))
    with pytest.raises(MetalearnError, match="layers.json.*validation"):
        setup.choose("resumed")


def test_candidates_limit_the_choice(setup: Setup) -> None:
    cfg = dataclasses.replace(setup.cfg, features=dataclasses.replace(setup.cfg.features, candidates=[-1, 1]))
    _, entries = setup.choose("two", cfg)
    assert all(sorted(e["scores"]) == ["1", "2"] and e["layer"] in (1, 2) for e in entries)
    bad = dataclasses.replace(setup.cfg, features=dataclasses.replace(setup.cfg.features, candidates=[3]))
    with pytest.raises(MetalearnError, match="features.candidates"):
        setup.choose("bad", bad)


def test_off_by_default_and_refused_without_validation_speakers(setup: Setup) -> None:
    off = dataclasses.replace(setup.cfg, features=dataclasses.replace(setup.cfg.features, choose_layer=False))
    assert choose_layers(off, setup.variants, setup.rows, setup.folds, setup.episodes, setup.base) == {}
    assert not (setup.base / "layers.json").exists()
    bare = [dataclasses.replace(f, validation=()) for f in setup.folds]
    with pytest.raises(MetalearnError, match="speakers.validation"):
        choose_layers(setup.cfg, setup.variants, setup.rows, bare, setup.episodes, setup.base)
    mean = dataclasses.replace(setup.cfg, features=dataclasses.replace(setup.cfg.features, mean_layers=True))
    with pytest.raises(MetalearnError, match="mean_layers"):
        setup.choose("mean", mean)


def test_ties_go_to_the_later_layer() -> None:
    assert pick({0: 0.5, 1: 0.7, 2: 0.7}) == 2
    assert pick({0: 0.7, 1: 0.5, 2: 0.6}) == 0


def test_a_layer_below_the_pre_finetuned_ones_is_marked(tmp_path: Path) -> None:
    top2 = PretuneVariant("pft-a", tmp_path, "supervised", BackboneConfig(), tmp_path / "w", ("a",),
                          {"pretune": {"trainable_layers": 2}})
    whole = dataclasses.replace(top2, name="pft-b", config={"pretune": {"trainable_layers": None}})
    untouched = dataclasses.replace(top2, name="none", kind="none", weights=None, config={})
    assert [unchanged(top2, layer, 7) for layer in range(7)] == [True] * 5 + [False] * 2
    assert not any(unchanged(v, 0, 7) for v in (whole, untouched))
    entries = [{"variant": v.name, "fold": 0, "layer": 1, "scores": {"1": 0.5}, "states": 7,
                "unchanged_by_pretuning": unchanged(v, 1, 7)} for v in (top2, whole, untouched)]
    table = layers_table(entries, {v.name: v for v in (top2, whole, untouched)})
    assert ("| pft-a | 2 ending at the head's state (states 5+ changed) | layer 1 (50.0%, unchanged by "
            "pre-finetuning) |") in table
    assert "| pft-b | all ending at the head's state (states 0+ changed) | layer 1 (50.0%) |" in table
    assert "| none | none (untouched) | layer 1 (50.0%) |" in table
    low = dataclasses.replace(top2, name="pft-c", config={"pretune": {"trainable_layers": 1}, "head_layer": 1})
    assert [unchanged(low, layer, 7) for layer in range(7)] == [True] + [False] * 6  # layer 1 trained: states 1+


def test_the_run_scores_each_fold_on_its_chosen_layer(setup: Setup, clean: list[dict],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Every feature read of the grid uses the layer of the fold it scores; layers.json is in the run folder."""
    real, seen = scoring.variant_features, []  # read here, before the groups are forked out

    def spy(cfg, variant, rows, layer=None):
        seen.append(layer)
        return real(cfg, variant, rows, layer)

    monkeypatch.setattr(scoring, "variant_features", spy)
    cfg = load_config(None, overrides(setup.base, "run", CHOOSE, algorithms=["simpleshot"], **TINY))
    result = run_experiment(cfg)
    entries = json.loads((result.out / "layers.json").read_text())
    assert [e["layer"] for e in entries] == [e["layer"] for e in clean]
    assert sorted(set(seen)) == sorted({e["layer"] for e in clean})
    layer_of = {(e["variant"], e["fold"]): str(e["layer"]) for e in entries}
    fold_of = {s: f["fold"] for f in json.loads((result.out / "folds.json").read_text()) for s in f["test"]}
    records = read_trials(result.out)
    assert records and all(r["layer"] == layer_of[(r["pretune"], fold_of[r["speaker"]])] for r in records)
