"""Three-way speaker folds, the k = 0 episodes, N-way validation sets and tuned overlays (no audio, no models)."""

from __future__ import annotations

import itertools
import json

import pytest

from metalearn.configs.load import load_config
from metalearn.fewshot.episodes import NwayRule, nway_episodes
from metalearn.run.draw import with_validation
from metalearn.run.grid import Batching, Subset, assign_folds, plan_units, three_way_folds, without_support
from metalearn.run.tuned import apply_tuned, meta_steps_for, options_for, with_values
from metalearn.util.errors import MetalearnError
from tests.fixtures import make_rows

ESD = [f"00{i}" for i in range(11, 21)]


def test_two_way_folds_are_unchanged() -> None:
    """The folds every committed run used (recorded before validation speakers existed)."""
    assert assign_folds(ESD, 2, 0) == [["0013", "0014", "0015", "0017", "0018"],
                                       ["0011", "0012", "0016", "0019", "0020"]]
    assert assign_folds(ESD, 3, 7) == [["0011", "0012", "0018", "0019"], ["0013", "0014", "0017"],
                                       ["0015", "0016", "0020"]]
    assert assign_folds(ESD[:4], 2, 0) == [["0011", "0013"], ["0012", "0014"]]


@pytest.mark.parametrize("folds,seed", [(2, 0), (3, 7), (5, 1)])
def test_validation_zero_gives_the_two_way_folds(folds: int, seed: int) -> None:
    for f in three_way_folds(ESD, folds, seed, validation=0):
        assert list(f.test) == assign_folds(ESD, folds, seed)[f.fold] and f.validation == ()
        assert set(f.meta_train) == set(ESD) - set(f.test)


@pytest.mark.parametrize("folds,seed,validation", [(2, 0, 1), (2, 3, 2), (3, 7, 1), (5, 1, 3)])
def test_three_way_folds_are_disjoint_and_keep_the_test_speakers(folds: int, seed: int, validation: int) -> None:
    made = three_way_folds(ESD, folds, seed, validation=validation)
    assert made == three_way_folds(ESD, folds, seed, validation=validation)  # seeded
    assert sorted(s for f in made for s in f.test) == ESD  # every speaker tested exactly once
    for f in made:
        parts = [set(f.test), set(f.validation), set(f.meta_train)]
        assert all(not (a & b) for a, b in itertools.combinations(parts, 2))
        assert set().union(*parts) == set(ESD) and len(f.validation) == validation
        assert list(f.test) == assign_folds(ESD, folds, seed)[f.fold]  # validation never changes who is tested


def test_demo_folds_are_five_one_four() -> None:
    made = three_way_folds(ESD, 2, 0, validation=1)
    assert [(len(f.test), len(f.validation), len(f.meta_train)) for f in made] == [(5, 1, 4), (5, 1, 4)]
    assert len({f.validation for f in made}) == 2  # each fold draws its own


def test_fold_limits() -> None:
    (only,) = three_way_folds(ESD, 1, 0, validation=1)  # one fold of every speaker: nobody left to draw
    assert only.validation == only.meta_train == ()
    (named,) = three_way_folds(ESD, 2, 0, test=ESD[:8], validation=1)
    assert len(named.validation) == 1 and len(named.meta_train) == 1
    with pytest.raises(MetalearnError, match="'speakers.validation': 2 validation speakers leave fold 0 no meta"):
        three_way_folds(ESD, 2, 0, test=ESD[:8], validation=2)
    with pytest.raises(MetalearnError, match="'speakers.validation': -1 must be >= 0"):
        three_way_folds(ESD, 2, 0, validation=-1)


def test_k0_episodes_strip_the_smallest_k() -> None:
    rows = make_rows()
    episodes = [e for k in (2, 1) for e in nway_episodes(rows, ["0011", "0012"], k, 2, 0)[0]]
    zero = without_support(episodes)
    assert sorted(z.episode_id for z in zero) == [f"nway/k0/{s}/r{r}" for s in ("0011", "0012") for r in (0, 1)]
    source = {e.episode_id: e for e in episodes}
    for z in zero:
        e = source[z.episode_id.replace("/k0/", "/k1/")]
        assert z.k == 0 and z.support == () and (z.query, z.validation) == (e.query, e.validation)
    units = plan_units(["v"], [0], [["0011"], ["0012"]], ["transfer", "finetune"], {0: episodes},
                       Batching(100, only={"transfer": Subset(repetitions=1, zero=True)}))
    ks = {a: sorted(e.k for u in units if u.algorithm == a for e in u.episodes) for a in ("transfer", "finetune")}
    assert ks == {"transfer": [0, 0, 1, 1, 2, 2], "finetune": [1, 1, 1, 1, 2, 2, 2, 2]}


def test_nway_validation_is_the_evaluation_split() -> None:
    rows = make_rows()  # 3 evaluation utterances per speaker and emotion
    episodes, _ = nway_episodes(rows, ["0011", "0012"], 2, 2, 0, rule=NwayRule(classes=("neutral", "angry", "sad")))
    validated = with_validation(episodes, rows)
    for e, v in zip(episodes, validated, strict=True):
        assert (v.support, v.query, v.episode_id) == (e.support, e.query, e.episode_id)
        names = [v.classes[label] for label in v.validation_labels]
        assert sorted(zip(v.validation, names, strict=True)) == sorted(
            (f"esd/{u.utterance_id}", u.emotion) for u in rows
            if u.speaker == e.speaker and u.split == "evaluation" and u.emotion in e.classes)
        assert len(v.validation) == 9 and not set(v.validation) & set(v.support + v.query)


def _cfg(*extra: str):
    return load_config(None, ["data.target.root=/x", *extra])


def test_tuned_values_apply_to_their_fold_only(tmp_path) -> None:
    cfg = _cfg("meta_train.steps=7", "algorithms.finetune.steps=30")
    folds = three_way_folds(ESD, 2, 0, validation=1)
    tuned = with_values(cfg, folds[1], "finetune", {"lr": 0.5}, 3)
    assert options_for(tuned, "finetune", 1)["lr"] == 0.5 and options_for(tuned, "finetune", 1)["steps"] == 30
    assert options_for(tuned, "finetune", 0)["lr"] == cfg.algorithms.finetune.lr
    assert (meta_steps_for(tuned, "finetune", 1), meta_steps_for(tuned, "finetune", 0)) == (3, 7)
    overlay = tmp_path / "tuned.yaml"
    rows = "\n".join(f"    - {{fold: {f.fold}, validation: {list(f.validation)}, meta_train: {list(f.meta_train)}, "
                     f"algorithms: {{finetune: {{lr: 0.{f.fold + 1}}}}}, meta_steps: {{maml: 9}}}}" for f in folds)
    overlay.write_text(f"tuned:\n  folds:\n{rows}\n")
    applied = apply_tuned(_cfg(f"tuned.file={overlay}"), folds)
    assert [options_for(applied, "finetune", f)["lr"] for f in (0, 1)] == [0.1, 0.2]
    assert meta_steps_for(applied, "maml", 0) == 9
    with pytest.raises(MetalearnError, match="fold 0 was tuned on validation"):
        apply_tuned(_cfg(f"tuned.file={overlay}"), three_way_folds(ESD, 2, 5, validation=1))
    with pytest.raises(MetalearnError, match="tuned for 2 folds, the run has 3"):
        apply_tuned(_cfg(f"tuned.file={overlay}"), three_way_folds(ESD, 3, 0, validation=1))
    with pytest.raises(MetalearnError, match="'tuned.file': 'nope' is neither a file"):
        apply_tuned(_cfg("tuned.file=nope"), folds)


def test_run_folder_keeps_its_folds(tmp_path) -> None:
    """folds.json is written once and checked; work from before validation speakers is finished two-way only."""
    from metalearn.run.runner import speaker_folds

    cfg = _cfg("speakers.validation=1")
    saved = speaker_folds(cfg, ESD, tmp_path / "new")
    assert json.loads((tmp_path / "new" / "folds.json").read_text()) == [
        {"fold": f.fold, "test": list(f.test), "validation": list(f.validation), "meta_train": list(f.meta_train),
         "meta_train_sources": {}} for f in saved]
    with pytest.raises(MetalearnError, match="folds.json: the run's folds differ"):
        speaker_folds(_cfg("speakers.validation=2"), ESD, tmp_path / "new")
    old = tmp_path / "old"
    old.mkdir()
    (old / "trials.jsonl").write_text("")
    with pytest.raises(MetalearnError, match="without validation speakers .* speakers.validation=0"):
        speaker_folds(cfg, ESD, old)
    assert not speaker_folds(_cfg("speakers.validation=0"), ESD, old)[0].validation
