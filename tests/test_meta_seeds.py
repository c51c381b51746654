"""Meta-training seeds (``meta_train.seeds``): methods that learn across speakers are meta-trained once per seed,
records carry ``meta_seed``, seed 0 reproduces the runs from before, summaries average the seeds within speakers.
"""

from __future__ import annotations

import json
import math
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from metalearn.configs.load import load_config
from metalearn.fewshot.episodes import nway_episodes
from metalearn.report.records import VOLATILE, read_trials, trial_key
from metalearn.report.summary import summarize
from metalearn.run.grid import Batching, plan_units
from metalearn.run.runner import run_experiment
from metalearn.run.scoring import derived_seed
from tests.conftest import overrides, tiny_corpora
from tests.fixtures import make_rows

ALGORITHMS = ["finetune", "protonet_proj", "fomaml", "transfer"]
LEARNED = {"protonet_proj", "fomaml", "transfer"}  # meta-trained (transfer: trained on labelled clips)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("meta_seeds")
    tiny_corpora(root / "data")
    return root


def run(base: Path, out: str, *extra: str):
    # transfer at its default width (256), as this test has always run it
    return run_experiment(load_config(None, overrides(base, out, "algorithms.transfer.hidden=[256]", *extra,
                                                      algorithms=ALGORITHMS, chunk=3)))


def stable(records: list[dict]) -> list[dict]:
    return sorted(({k: v for k, v in r.items() if k not in VOLATILE} for r in records), key=trial_key)


@pytest.fixture(scope="module")
def one(base: Path):
    return run(base, "one")


@pytest.fixture(scope="module")
def two(base: Path):
    return run(base, "two", "meta_train.seeds=[0,1]")


def test_meta_seed_0_keeps_the_adapter_seed_of_before() -> None:
    """The values SeedSequence([seed, fold, meta_k]) gave before meta seeds existed; other meta seeds differ."""
    assert derived_seed(0, 0, 1) == derived_seed(0, 0, 1, 0) == 3831201730
    assert derived_seed(1, 1, 2) == 3005640382
    assert len({derived_seed(0, 0, 0, m) for m in range(4)}) == 4


def test_one_meta_seed_plans_the_grid_of_before() -> None:
    """meta seeds (0,) give the same units in the same order as a plan without meta seeds (shards stay put);
    (0, 1) for one algorithm doubles its units only."""
    rows = make_rows()
    episodes = {0: nway_episodes(rows, ["0011", "0012", "0013"], 1, 3, 0)[0]}
    args = (["v"], [0], [["0011"], ["0012", "0013"]], ["finetune", "maml"], episodes)
    before = plan_units(*args, Batching(2, per_k=["maml"]))
    assert plan_units(*args, Batching(2, per_k=["maml"], meta_seeds=lambda a, f, v: (0,))) == before
    both = plan_units(*args, Batching(2, per_k=["maml"], meta_seeds=lambda a, f, v: (0, 1) if a == "maml" else (0,)))
    count = Counter((u.algorithm, u.meta_seed) for u in both)
    assert count[("maml", 1)] == count[("maml", 0)] == sum(u.algorithm == "maml" for u in before) > 0
    assert count[("finetune", 0)] == sum(u.algorithm == "finetune" for u in before) and ("finetune", 1) not in count
    assert len({u.group for u in both if u.algorithm == "maml"}) == 2 * len({u.group for u in before
                                                                             if u.algorithm == "maml"})


def test_two_meta_seeds_double_the_meta_learned_trials_only(one, two) -> None:
    assert one.complete and two.complete
    a, b = read_trials(one.out), read_trials(two.out)
    count_a, count_b = Counter(r["algorithm"] for r in a), Counter(r["algorithm"] for r in b)
    assert set(count_a) == set(ALGORITHMS) and two.planned == len(b)
    for algorithm in ALGORITHMS:
        assert count_b[algorithm] == (2 if algorithm in LEARNED else 1) * count_a[algorithm], algorithm
    seeds = defaultdict(set)
    for r in b:
        seeds[r["algorithm"]].add(r["meta_seed"])
    assert seeds == {a: {0, 1} if a in LEARNED else {0} for a in ALGORITHMS}
    assert {r["meta_seed"] for r in a} == {0}


def test_meta_seed_0_records_equal_a_run_without_meta_seeds(one, two) -> None:
    a, b = read_trials(one.out), read_trials(two.out)
    assert stable([r for r in b if r["meta_seed"] == 0]) == stable(a)
    first = {(r["algorithm"], r["episode_id"]): r["accuracy"] for r in b if r["meta_seed"] == 0}
    moved = [r for r in b if r["meta_seed"] == 1 and r["accuracy"] != first[(r["algorithm"], r["episode_id"])]]
    assert {r["algorithm"] for r in moved} == {"fomaml", "transfer", "protonet_proj"}  # another meta-training


def test_summary_averages_meta_seeds_within_each_speaker(two) -> None:
    records = read_trials(two.out)
    for row in summarize(records):
        cell = [r for r in records if (r["pretune"], r["algorithm"], r["protocol"], r["k"]) ==
                (row["pretune"], row["algorithm"], row["protocol"], row["k"])]
        per = defaultdict(list)
        for r in cell:
            per[r["speaker"]].append(r["accuracy"])
        expected = sum(sum(v) / len(v) for v in per.values()) / len(per)
        assert row["n_trials"] == len(cell) and row["n_speakers"] == len(per) == 4
        assert math.isclose(row["accuracy_mean"], expected, rel_tol=0, abs_tol=1e-12)
    fomaml = next(r for r in summarize(records) if r["algorithm"] == "fomaml" and r["k"] == 1)
    assert fomaml["n_trials"] == 2 * next(r for r in summarize(read_trials(two.out)) if r["algorithm"] == "finetune"
                                          and r["k"] == 1)["n_trials"]


def test_logs_from_before_meta_seeds_still_read_and_resume(base: Path, one) -> None:
    """A run folder (or results/demo's trials.csv) written before meta_seed existed reads as meta seed 0 and a
    rerun finds every trial done."""
    folder = base / "old"
    shutil.copytree(one.out, folder)
    lines = [json.loads(x) for x in (folder / "trials.jsonl").read_text().splitlines()]
    old = ("meta_seed", "sha256")  # logs then had neither field
    (folder / "trials.jsonl").write_text("".join(json.dumps({k: v for k, v in r.items() if k not in old}) + "\n"
                                                 for r in lines))
    assert "meta_seed" not in (folder / "trials.jsonl").read_text()
    assert stable(read_trials(folder)) == stable(read_trials(one.out))
    again = run(base, "old")
    assert again.complete and again.ran == 0
    csv_only = base / "old-csv"
    csv_only.mkdir()
    header, *rows = (folder / "trials.csv").read_text().splitlines()
    drop = header.split(",").index("meta_seed")
    (csv_only / "trials.csv").write_text("\n".join(",".join(c for i, c in enumerate(line.split(",")) if i != drop)
                                                   for line in [header, *rows]) + "\n")
    assert "meta_seed" not in (csv_only / "trials.csv").read_text()
    assert stable(read_trials(csv_only)) == stable(read_trials(one.out))
