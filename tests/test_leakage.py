"""No speaker leaks into a fold it is not meant to teach: the runner, black-box, with poisoned features.

A speaker's features are replaced by large noise everywhere (its own episodes included), and the run is
repeated. Whatever a fold learns across speakers (standardisation, meta-training, the transfer baseline's
training) may use its meta-training speakers only, so the records of a fold's test speakers must not change
when another test speaker of the fold, or a validation speaker of the fold, is poisoned; and they must change
when a meta-training speaker is (or the poison would prove nothing). Tiny corpus: 4 speakers, 2 folds of
2 test / 1 validation / 1 meta-training speakers.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from metalearn.configs.load import load_config
from metalearn.report.records import VOLATILE
from metalearn.run import scoring
from metalearn.run.runner import run_experiment
from tests.conftest import overrides, tiny_corpora

# each learns across speakers or standardizes
ALGORITHMS = ["finetune", "simpleshot", "protonet_proj", "fomaml", "transfer"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see tests/conftest.py


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("leakage")
    tiny_corpora(root / "data")
    return root


def _run(base: Path, out: str, poisoned: tuple[str, ...] = ()) -> dict[str, list[dict]]:
    """Run the tiny grid with ``poisoned`` speakers' features replaced by noise: speaker -> its records."""
    real = scoring.variant_features  # read here, before the groups are forked out: the workers get the poison

    def poison(cfg, variant, rows, layer=None):
        table = real(cfg, variant, rows, layer)
        bad = torch.tensor([u.speaker in poisoned for u in table.rows])
        x = table.x
        noise = 100 + 100 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=x.dtype)
        return table.with_x(torch.where(bad[:, None], noise, x))

    scoring.variant_features = poison
    try:
        result = run_experiment(load_config(None, overrides(base, out, algorithms=ALGORITHMS, repetitions=1)))
    finally:
        scoring.variant_features = real
    by_speaker: dict[str, list[dict]] = {}
    with open(result.out / "trials.csv", newline="") as f:
        for r in csv.DictReader(f):
            by_speaker.setdefault(r["speaker"], []).append({k: v for k, v in r.items() if k not in VOLATILE})
    return by_speaker


@pytest.fixture(scope="module")
def reference(base: Path) -> tuple[dict, list[dict]]:
    records = _run(base, "clean")
    return records, json.loads((base / "clean" / "folds.json").read_text())


@pytest.fixture(scope="module")
def validator_poisoned(base: Path, reference) -> tuple[str, dict]:
    """Fold 1's validation speaker (a test speaker of fold 0) poisoned."""
    speaker = reference[1][1]["validation"][0]
    return speaker, _run(base, "poison-validation", (speaker,))


@pytest.fixture(scope="module")
def teacher_poisoned(base: Path, reference) -> tuple[str, dict]:
    """Fold 1's meta-training speaker (a test speaker of fold 0) poisoned."""
    speaker = reference[1][1]["meta_train"][0]
    return speaker, _run(base, "poison-meta-train", (speaker,))


def test_folds_json_is_three_way_and_covers_every_speaker(reference) -> None:
    records, folds = reference
    assert [f["fold"] for f in folds] == [0, 1]
    for f in folds:
        assert (len(f["test"]), len(f["validation"]), len(f["meta_train"])) == (2, 1, 1)
        assert sorted(f["test"] + f["validation"] + f["meta_train"]) == sorted(records)
    assert sorted(s for f in folds for s in f["test"]) == sorted(records)


@pytest.mark.parametrize("poisoned", ["validator_poisoned", "teacher_poisoned"])
def test_a_test_speaker_never_reaches_its_folds_other_test_speakers(request, reference, poisoned) -> None:
    """Poisoning one test speaker of fold 0 changes nothing for fold 0's other test speaker: neither
    standardisation nor meta-training nor the transfer baseline's training saw fold 0's test speakers."""
    speaker, records = request.getfixturevalue(poisoned)
    clean, folds = reference
    assert speaker in folds[0]["test"]
    (other,) = set(folds[0]["test"]) - {speaker}
    assert records[other] == clean[other]
    assert records[speaker] != clean[speaker]  # its own episodes did change


def test_a_validation_speaker_never_reaches_its_folds_test_speakers(reference, validator_poisoned) -> None:
    speaker, records = validator_poisoned
    clean, folds = reference
    assert speaker in folds[1]["validation"]
    for tested in folds[1]["test"]:
        assert records[tested] == clean[tested]


def test_a_meta_training_speaker_does_reach_its_folds_test_speakers(reference, teacher_poisoned) -> None:
    """The poison is strong enough to show: every method's fold-1 records change when fold 1 learns from it."""
    speaker, records = teacher_poisoned
    clean, folds = reference
    assert speaker in folds[1]["meta_train"]
    for algorithm in ALGORITHMS:
        changed = [r for s in folds[1]["test"] for r, c in zip(records[s], clean[s], strict=True)
                   if r["algorithm"] == algorithm and r != c]
        assert changed, algorithm
