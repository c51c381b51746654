"""``tune``: equal budgets, validation speakers only, resumable, and an overlay that ``run`` applies per fold."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import optuna
import pytest
import torch
import yaml

from metalearn.cli import main
from metalearn.configs.load import load_config
from metalearn.data.corpus_config import prepare_manifest
from metalearn.fewshot.algorithms import ALGORITHMS, AdapterSpec, adapter_class, build_adapter, config_class
from metalearn.run.runner import run_experiment
from metalearn.run.stages import prepare_variants, variant_features
from metalearn.tune import study as tune_module
from metalearn.tune.spaces import search_space, space_fields
from metalearn.tune.study import Scorer, tune
from metalearn.util.errors import MetalearnError
from tests.conftest import overrides, tiny_corpora

TUNED = ["finetune", "transfer"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see tests/conftest.py


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tune")
    tiny_corpora(root / "data")
    return root


# the tiny run's options (tests/conftest.py): 3 trials per method over meta steps 2 and 4
TINY = {"algorithms": ["finetune", "transfer", "majority"], "repetitions": 1, "trials": 3}


def trial_table(out: Path, algorithm: str) -> list[dict]:
    with open(out / "tuning" / f"{algorithm}.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k not in ("seconds", "worker")} for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def tuned(base: Path) -> Path:
    (base / "tiny.yaml").write_text("name: tiny\ntune: {trials: 2}\n")
    args = ["tune", "--config", str(base / "tiny.yaml"), "--algorithms", ",".join(TUNED), "--trials", "3"]
    assert main([*args, *(o for o in overrides(base, "tuned", **TINY) if o != "tune.trials=3")]) == 0
    return base / "tuned"


def test_every_method_gets_the_same_budget(tuned: Path) -> None:
    for algorithm in TUNED:
        rows = trial_table(tuned, algorithm)
        for fold in ("0", "1"):
            mine = [r for r in rows if r["fold"] == fold and r["counted"] == "True"]
            assert len(mine) == 3 and mine[0]["hand_set"] == "True"  # the hand-set config is trial 0
    md = (tuned / "tuning.md").read_text()
    assert all(f"| {a} | none | {f} | own | 1 of 1 " in md for a in TUNED for f in (0, 1))
    assert "| transfer | k=0" not in md and "k=0" in md  # transfer's unadapted classifier is scored too


def test_overlay_holds_each_folds_winner_and_run_applies_it(base: Path, tuned: Path) -> None:
    overlay = yaml.safe_load((tuned / "tuning" / "tuned.yaml").read_text())["tuned"]["folds"]
    for fold in overlay:
        rows = [r for r in trial_table(tuned, "finetune") if r["fold"] == str(fold["fold"])]
        best = max(rows, key=lambda r: float(r["accuracy"]))
        assert fold["algorithms"]["finetune"] == yaml.safe_load(best["values"])
        assert set(fold["meta_steps"]) == {"transfer"}  # finetune learns nothing across speakers
        # the one variant's own values are the fold-level ones
        assert fold["variants"] == {"none": {"algorithms": fold["algorithms"], "meta_steps": fold["meta_steps"]}}
    tuned_file = f"tuned.file={tuned / 'tuning/tuned.yaml'}"
    result = run_experiment(load_config(None, overrides(base, "run", tuned_file, **TINY)))
    saved = yaml.safe_load((result.out / "config.yaml").read_text())["tuned"]
    assert saved["file"].endswith("tuned.yaml") and saved["folds"] == overlay
    ks = {(r["algorithm"], int(r["k"])) for r in csv.DictReader(open(result.out / "summary.csv"))}
    assert {("transfer", 0), ("transfer", 1), ("transfer", 2), ("majority", 1)} <= ks


def test_trials_score_validation_speakers_only(base: Path, tuned: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every episode a trial scores belongs to the fold's validation speakers; none to its test speakers."""
    seen, real = [], tune_module.score_group

    def spy(cfg, units, variant, table, folds):
        fold = folds[units[0].fold]
        seen.append(({e.speaker for u in units for e in u.episodes}, fold))
        return real(cfg, units, variant, table, folds)

    monkeypatch.setattr(tune_module, "score_group", spy)
    tune(load_config(None, overrides(base, "spy", "tune.trials=1", "tune.algorithms=[finetune]", **TINY)))
    assert seen and all(speakers <= set(fold.validation) for speakers, fold in seen)


def test_a_killed_tuning_resumes_to_the_same_trials(base: Path, tuned: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real, calls = Scorer.score, []

    def dying(self, *args):
        if len(calls) == 4:
            raise KeyboardInterrupt  # killed in the middle of a trial
        calls.append(1)
        return real(self, *args)

    monkeypatch.setattr(Scorer, "score", dying)
    with pytest.raises(KeyboardInterrupt):
        tune(load_config(None, overrides(base, "killed", "tune.algorithms=[finetune,transfer]", **TINY)))
    monkeypatch.setattr(Scorer, "score", real)
    tune(load_config(None, overrides(base, "killed", "tune.algorithms=[finetune,transfer]", **TINY)))
    for algorithm in TUNED:
        resumed = [r for r in trial_table(base / "killed", algorithm) if r["counted"] == "True"]
        assert [(r["fold"], r["values"], r["accuracy"]) for r in resumed] == [
            (r["fold"], r["values"], r["accuracy"]) for r in trial_table(tuned, algorithm) if r["counted"] == "True"]
    states = [r["state"] for r in trial_table(base / "killed", "finetune")]
    assert states.count("FAIL") == 1  # the trial it was killed in (fold 1's second)


def test_a_failed_hand_set_trial_is_tried_again_first(base: Path, tuned: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A study whose first (hand-set) trial failed, an error or a kill, resumes with the hand-set config again,
    so its first finished trial is the hand-set one and the counted trials equal an uninterrupted study's."""
    real, calls = Scorer.score, []

    def failing_first(self, *args):
        calls.append(1)
        if len(calls) == 1:
            raise MetalearnError("a config mistake found in the first trial")
        return real(self, *args)

    monkeypatch.setattr(Scorer, "score", failing_first)
    with pytest.raises(MetalearnError, match="first trial"):
        tune(load_config(None, overrides(base, "failed", "tune.algorithms=[finetune]", **TINY)))
    tune(load_config(None, overrides(base, "failed", "tune.algorithms=[finetune]", **TINY)))
    rows = trial_table(base / "failed", "finetune")
    assert [r["state"] for r in rows].count("FAIL") == 1
    counted = [(r["fold"], r["values"], r["accuracy"]) for r in rows if r["counted"] == "True"]
    assert counted == [(r["fold"], r["values"], r["accuracy"])
                       for r in trial_table(tuned, "finetune") if r["counted"] == "True"]


def test_tuning_refuses_what_it_cannot_do(base: Path, tuned: Path) -> None:
    with pytest.raises(MetalearnError, match="tuning needs them"):
        tune(load_config(None, overrides(base, "nv", "speakers.validation=0", **TINY)))
    with pytest.raises(MetalearnError, match="'tune.algorithms': \\['majority'\\] have no search space"):
        tune(load_config(None, overrides(base, "nv2", "tune.algorithms=[majority]", **TINY)))
    with pytest.raises(MetalearnError, match="holds studies of another config .*episodes.repetitions"):
        tune(load_config(None, overrides(base, "tuned", "episodes.repetitions=2", **TINY)))


@pytest.mark.parametrize("name", [a for a in ALGORITHMS if search_space(a) is not None])
def test_every_space_gives_valid_config_values_around_the_defaults(name: str) -> None:
    space = search_space(name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        values = space(study.ask())
        if adapter_class(name).inputs == "audio":  # built from audio only: its config checks the values
            config_class(name)(**values)
        else:
            build_adapter(name, AdapterSpec(dim=8, ways=3), values)  # unknown fields or bad values raise
        assert set(values) == set(space_fields(space))
    assert set(space_fields(space)) <= {f for f in config_class(name).__dataclass_fields__}


def test_tuning_reads_the_chosen_layer_and_uses_one_meta_seed(
        base: Path, tuned: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With features.choose_layer, trials score each fold's features at the layer chosen on its validation
    speakers (layers.json in the tuning folder); every trial meta-trains once, with the first meta seed."""
    seen, real = [], tune_module.score_group

    def spy(cfg, units, variant, table, folds):
        seen.append(({u.meta_seed for u in units}, units[0].fold, table.x))
        return real(cfg, units, variant, table, folds)

    monkeypatch.setattr(tune_module, "score_group", spy)
    tune(load_config(None, overrides(base, "layers", "tune.trials=1", "tune.algorithms=[transfer]",
                                     "features.choose_layer=true", "meta_train.seeds=[3,4]",
                                     "algorithms.only={transfer: {variants: [none]}}", **TINY)))
    chosen = {e["fold"]: e["layer"] for e in json.loads((base / "layers" / "tuning" / "layers.json").read_text())}
    assert seen and all(seeds == {3} for seeds, _, _ in seen)
    cfg = load_config(None, overrides(base, "unused", **TINY))
    rows = prepare_manifest(cfg.data.target, cfg.data.manifests_dir)
    for _, fold, x in seen:
        expected = variant_features(cfg, prepare_variants(cfg)["none"], rows, chosen[fold])
        assert expected.layer == str(chosen[fold]) and torch.equal(x, expected.x)
