"""``tune`` per pretune variant and fold: one study per variant a method runs on, at that variant's features;
variants with identical features share one; the objective is the mean over validation speakers of per-speaker
means, with 2 validation speakers per fold too."""

from __future__ import annotations

import csv
import dataclasses
import importlib
import math
from collections import Counter
from pathlib import Path

import optuna
import pytest
import torch
import yaml

from metalearn.configs.load import load_config
from metalearn.features.table import FeatureTable
from metalearn.fewshot.algorithms import REGISTRY
from metalearn.report.summary import speaker_means
from metalearn.run.tuned import meta_steps_for, options_for
from metalearn.tune import study as tune_module
from metalearn.tune.journal import JOURNAL, StudyKey
from metalearn.tune.study import tune
from metalearn.util.errors import MetalearnError
from tests.conftest import overrides, tiny_corpora

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see tests/conftest.py
TINY = {"algorithms": ["finetune", "transfer", "majority"], "repetitions": 1, "trials": 2}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tune_variants")
    tiny_corpora(root / "data")
    return root


def _with_variants(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, str, torch.Tensor]]:
    """Give tune three variants: none, twin (none's very features) and other (features of its own); returns the
    (variant scored, fold, units' variant, features) of every score_group call."""
    real_prepared, real_features, real_score = tune_module.prepared, tune_module.variant_features, \
        tune_module.score_group

    def prepared(cfg, rows, folder, train):
        inputs = real_prepared(cfg, rows, folder, train)
        none = inputs.variants["none"]
        variants = {"none": none, "twin": dataclasses.replace(none, name="twin"),
                    "other": dataclasses.replace(none, name="other")}
        return dataclasses.replace(inputs, variants=variants)

    def variant_features(cfg, variant, rows, layer=None):
        table = real_features(cfg, variant, rows, layer)
        if variant.name != "other":
            return table
        noise = torch.randn(table.x.shape, generator=torch.Generator().manual_seed(0))
        return FeatureTable(table.rows, table.x + noise * table.x.std(), table.layer, "other")

    seen = []

    def score_group(cfg, units, variant, table, folds):
        seen.extend((variant.name, u.fold, u.variant, table.x) for u in units)
        return real_score(cfg, units, variant, table, folds)

    monkeypatch.setattr(tune_module, "prepared", prepared)
    monkeypatch.setattr(tune_module, "variant_features", variant_features)
    monkeypatch.setattr(tune_module, "score_group", score_group)
    return seen


@pytest.fixture(scope="module")
def variants_tuned(base: Path) -> tuple[Path, list]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        seen = _with_variants(monkeypatch)
        cfg = load_config(None, overrides(base, "variants", "tune.algorithms=[finetune,transfer]",
                                          "algorithms.only={transfer: {variants: [other]}}", **TINY))
        tune(cfg)
    return base / "variants", seen


def _studies(out: Path) -> set[str]:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(out / "tuning" / JOURNAL)))
    return set(optuna.get_all_study_names(storage))


def test_one_study_per_variant_a_method_runs_on_and_twins_share(variants_tuned: tuple[Path, list]) -> None:
    out, seen = variants_tuned
    expected = {StudyKey(a, v, f).name for a, vs in (("finetune", ("none", "other")), ("transfer", ("other",)))
                for v in vs for f in (0, 1)}
    assert _studies(out) == expected  # no twin study (identical features), transfer on `other` only
    md = (out / "tuning.md").read_text()
    for f in (0, 1):
        assert f"| finetune | twin | {f} | shares none's (identical features) | 1 of 1 " in md
        assert f"| finetune | other | {f} | own |" in md and f"| transfer | other | {f} | own |" in md
    assert "| transfer | none |" not in md and "| transfer | twin |" not in md


def test_each_study_scores_its_own_variants_features(variants_tuned: tuple[Path, list]) -> None:
    out, seen = variants_tuned
    assert {name for name, *_ in seen} == {"none", "other"}
    assert all(name == unit_variant for name, _, unit_variant, _ in seen)
    for fold in (0, 1):
        none = [x for name, f, _, x in seen if name == "none" and f == fold]
        other = [x for name, f, _, x in seen if name == "other" and f == fold]
        assert none and other and not torch.equal(none[0], other[0])
        assert all(torch.equal(x, none[0]) for x in none) and all(torch.equal(x, other[0]) for x in other)


def test_the_overlay_holds_each_variants_winners_and_a_run_reads_them(base: Path,
                                                                      variants_tuned: tuple[Path, list]) -> None:
    out, _ = variants_tuned
    folds = yaml.safe_load((out / "tuning" / "tuned.yaml").read_text())["tuned"]["folds"]
    with open(out / "tuning" / "finetune.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    cfg = load_config(None, overrides(base, "reads", f"tuned.file={out / 'tuning' / 'tuned.yaml'}", **TINY))
    for fold in folds:
        own = fold["variants"]
        assert set(own) == {"none", "twin", "other"}
        assert own["twin"] == own["none"] and "transfer" not in own["none"]["algorithms"]
        for variant in ("none", "other"):
            mine = [r for r in rows if r["fold"] == str(fold["fold"]) and r["variant"] == variant]
            best = max(mine, key=lambda r: (float(r["accuracy"]), -int(r["trial"])))
            assert own[variant]["algorithms"]["finetune"] == yaml.safe_load(best["values"])
        # fold-level: per method, the first variant tuned (none for finetune, other for transfer)
        assert fold["algorithms"] == {"finetune": own["none"]["algorithms"]["finetune"],
                                      "transfer": own["other"]["algorithms"]["transfer"]}
        n = fold["fold"]
        assert options_for(cfg, "transfer", n, "other")["lr"] == own["other"]["algorithms"]["transfer"]["lr"]
        assert meta_steps_for(cfg, "transfer", n, "other") == own["other"]["meta_steps"]["transfer"]
        assert options_for(cfg, "finetune", n, "other")["lr"] == own["other"]["algorithms"]["finetune"]["lr"]
        assert options_for(cfg, "finetune", n)["lr"] == fold["algorithms"]["finetune"]["lr"]


def test_two_validation_speakers_score_the_mean_of_speaker_means(base: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """One fold with 2 validation speakers; a trial's value is the mean of the two speakers' means, even when
    one speaker has fewer episodes (here: its first record dropped), not the mean over episodes."""
    real, scored = tune_module.score_group, []

    def uneven(cfg, units, variant, table, folds):
        for unit, records in real(cfg, units, variant, table, folds):
            kept = records[1:] if not scored else records  # one record fewer, of one speaker
            scored.append(kept)
            yield unit, kept

    monkeypatch.setattr(tune_module, "score_group", uneven)
    cfg = load_config(None, overrides(base, "two", "speakers.test=[0011]", "tune.algorithms=[finetune]",
                                      "tune.trials=1", validation=2, ks=(1, 2), **{**TINY, "repetitions": 2}))
    tune(cfg)
    with open(base / "two" / "tuning" / "finetune.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    records = [r for batch in scored for r in batch]
    means = speaker_means(records, "accuracy")
    assert len(means) == 2 and row["n_speakers"] == "2"
    assert math.isclose(float(row["accuracy"]), sum(means.values()) / 2, rel_tol=0, abs_tol=1e-12)
    assert sorted(Counter(r["speaker"] for r in records).values()) == [3, 4]
    per_episode = sum(r["accuracy"] for r in records) / len(records)
    if len(set(means.values())) == 2:  # the speakers are weighted equally, not their episodes
        assert not math.isclose(per_episode, float(row["accuracy"]))
    assert "| finetune | none | 0 | own | 2 of 2 " in (base / "two" / "tuning.md").read_text()


def test_a_method_with_a_smaller_declared_budget_counts_fewer_trials(base: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    module = importlib.import_module(f"metalearn.fewshot.algorithms.{REGISTRY['finetune'].module}")
    monkeypatch.setattr(module, "TUNING_TRIALS", 1, raising=False)
    tune(load_config(None, overrides(base, "budget", "tune.algorithms=[finetune]", **TINY)))
    with open(base / "budget" / "tuning" / "finetune.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["hand_set"] for r in rows] == ["True", "True"]  # one trial per fold: the hand-set one
    assert "2 trials each, except the methods that declare a smaller budget (finetune 1)" in \
        (base / "budget" / "tuning.md").read_text()


def test_tune_variant_tunes_that_variant_alone(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _with_variants(monkeypatch)
    only = "algorithms.only={transfer: {variants: [none]}}"
    tune(load_config(None, overrides(base, "alone", "tune.algorithms=[finetune]", "tune.variant=other", only,
                                     **TINY)))
    assert _studies(base / "alone") == {StudyKey("finetune", "other", f).name for f in (0, 1)}
    with pytest.raises(MetalearnError, match=r"tune: transfer runs on none of the variants tuned \(other\) in fold 0"):
        tune(load_config(None, overrides(base, "alone2", "tune.algorithms=[transfer]", "tune.variant=other", only,
                                         **TINY)))
    with pytest.raises(MetalearnError, match=r"'algorithms.only.transfer.variants': \['nope'\] are not among"):
        tune(load_config(None, overrides(base, "alone3", "tune.algorithms=[transfer]",
                                         "algorithms.only={transfer: {variants: [nope]}}", **TINY)))
