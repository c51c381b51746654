"""``meta_train.sources``: the source corpora's speakers meta-train too (each a task over its own emotions), listed
per fold in folds.json; methods that do not learn across speakers read exactly what they read without them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from metalearn.configs.load import load_config
from metalearn.report.records import VOLATILE
from metalearn.run.runner import run_experiment
from metalearn.util.errors import MetalearnError
from tests.conftest import overrides, tiny_corpora

pytestmark = pytest.mark.usefixtures("one_thread")
ALGORITHMS = ("finetune", "simpleshot", "fomaml")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sources")
    tiny_corpora(root / "data")
    return root


def run(base: Path, out: str, *extra: str):
    source = f"data.sources.cremad={{corpus: cremad, root: {base / 'data/cremad'}}}"
    items = overrides(base, out, source, *extra, algorithms=ALGORITHMS, ks=(1,), repetitions=1)
    return run_experiment(load_config(None, items))


def trials(folder: Path) -> dict[tuple, dict]:
    with open(folder / "trials.csv", newline="") as f:
        rows = [{k: v for k, v in r.items() if k not in VOLATILE} for r in csv.DictReader(f)]
    return {(r["algorithm"], r["speaker"], r["k"], r["seed"], r["meta_seed"]): r for r in rows}


@pytest.fixture(scope="module")
def pair(base: Path) -> tuple[Path, Path]:
    return run(base, "without").out, run(base, "with", "meta_train.sources=[cremad]").out


def test_folds_list_the_source_speakers(pair, base: Path) -> None:
    without, with_sources = pair
    actors = sorted({p.name.split("_")[0] for p in (base / "data/cremad").rglob("*.wav")})
    folds = json.loads((with_sources / "folds.json").read_text())
    assert actors and all(f["meta_train_sources"] == {"cremad": actors} for f in folds)
    assert all(f["meta_train_sources"] == {} for f in json.loads((without / "folds.json").read_text()))
    for f in folds:  # never tested, never validation: the target's speakers only
        assert not set(actors) & set(f["test"] + f["validation"] + f["meta_train"])


def test_only_the_meta_learner_sees_the_sources(pair) -> None:
    a, b = (trials(p) for p in pair)
    assert a.keys() == b.keys()
    for key in a:
        if key[0] != "fomaml":  # standardisation and the episodes are the target's alone
            assert a[key] == b[key], key
    differ = [k for k in a if k[0] == "fomaml" and a[k]["accuracy"] != b[k]["accuracy"]]
    assert differ, "meta-training on the source speakers changed no fomaml trial"


def test_unknown_source_is_one_line(base: Path) -> None:
    with pytest.raises(MetalearnError, match="meta_train.sources.*nope"):
        run(base, "bad", "meta_train.sources=[nope]")


def test_summary_says_what_the_learners_learned_from(pair) -> None:
    without, with_sources = pair
    learned = json.loads((with_sources / "learned.json").read_text())
    folds = json.loads((with_sources / "folds.json").read_text())
    assert [f["fold"] for f in learned] == [f["fold"] for f in folds]
    for f, fold in zip(learned, folds, strict=True):
        assert f["meta_train"]["speakers"] == len(fold["meta_train"])
        cremad = f["sources"]["cremad"]
        assert cremad["speakers"] == len(fold["meta_train_sources"]["cremad"]) and 0 <= cremad["task_speakers"] <= 2
    text = (with_sources / "summary.md").read_text()
    assert "methods that learn across speakers, fold 0:" in text and "cremad:" in text
    assert "Feature protocol:" in text
    assert "cremad" not in (without / "summary.md").read_text()


def test_only_speakers_that_fit_a_task_meta_train() -> None:
    """A source speaker with too few emotions (or clips) for one task of the run's shape is never offered: its
    clips could never be drawn, so they are not embedded either."""
    from metalearn.data.manifest import Utterance
    from metalearn.run.learned import fitting_sources, task_shape

    def row(corpus: str, speaker: str, emotion: str, i: int) -> Utterance:
        return Utterance(f"{speaker}-{emotion}-{i}", f"/x/{speaker}{i}.wav", corpus, speaker, "female", emotion,
                         emotion, "train", 1.0, 16000, f"sentence {i}")

    five = ("neutral", "happy", "angry", "sad", "surprise")
    target = [row("esd", s, e, i) for s in ("a", "b") for e in five for i in range(3)]
    rich = [row("cremad", "1001", e, i) for e in (*five, "fear") for i in range(4)]
    poor = [row("cremad", "1002", e, i) for e in five[:3] for i in range(9)]
    cfg = load_config(None, ["data.target.root=/x", "episodes.ks=[1,2]", "meta_train.queries=2"])
    assert task_shape(cfg, target) == (5, 1, 2)
    assert {u.speaker for u in fitting_sources(cfg, target, rich + poor)} == {"1001"}
