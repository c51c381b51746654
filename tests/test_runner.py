"""The runner on the tiny synthetic corpus: complete grids, resume after a kill, shards, determinism, report.

One reference run (tiny Whisper backbone, 4 speakers, 2 folds, 2 seeds, 4 algorithms) is compared with
interrupted, sharded and repeated runs; every comparison ignores only the wall-time column.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from metalearn.cli import main
from metalearn.configs.load import load_config
from metalearn.report.records import VOLATILE, TrialLog, merge_runs, read_trials, trial_key
from metalearn.run.runner import run_experiment
from metalearn.util.errors import MetalearnError
from tests.conftest import kill_and_resume, overrides, tiny_corpora

ALGORITHMS = ["finetune", "simpleshot", "protonet_proj", "fomaml"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see tests/conftest.py


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runner")
    tiny_corpora(root / "data")
    return root


TINY = {"algorithms": ALGORITHMS, "seeds": (0, 1), "chunk": 3}  # the tiny run's options (tests/conftest.py)


def run(base: Path, out: str, *extra: str, shard: tuple[int, int] = (0, 1)):
    return run_experiment(load_config(None, overrides(base, out, *extra, **TINY)), shard)


def stable(path: Path) -> list[dict]:
    """trials.csv rows without the wall-time column."""
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if k not in VOLATILE} for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def reference(base: Path):
    return run(base, "ref")


def test_complete_run_writes_everything(reference) -> None:
    out = reference.out
    episodes = sum(1 for s in (0, 1) for line in open(out / f"episodes-seed{s}.jsonl") if '"skipped"' not in line)
    assert reference.complete and reference.planned == reference.done == reference.ran == episodes * len(ALGORITHMS)
    for name in ("trials.jsonl", "trials.csv", "summary.csv", "per_speaker.csv", "summary.md", "config.yaml",
                 "run.json", "accuracy_vs_k.png", "macro_f1_vs_k.png", "uar_vs_k.png"):
        assert (out / name).is_file(), name
    records = read_trials(out)
    assert len({trial_key(r) for r in records}) == len(records) == reference.planned
    assert {r["algorithm"] for r in records} == set(ALGORITHMS) and {r["seed"] for r in records} == {0, 1}
    assert all(str(r["layer"]) for r in records)  # every trial record says which feature it read
    assert json.loads((out / "run.json").read_text())["git_commit"]
    with open(out / "summary.csv", newline="") as f:
        assert sum(int(r["n_trials"]) for r in csv.DictReader(f)) == len(records)


def test_folds_keep_meta_training_speakers_apart(reference) -> None:
    """Each speaker is tested in exactly one fold, so every speaker has every algorithm's trials once per episode."""
    records = read_trials(reference.out)
    speakers = {r["speaker"] for r in records}
    assert len(speakers) == 4
    per = {(r["speaker"], r["episode_id"], r["seed"]): 0 for r in records}
    for r in records:
        per[(r["speaker"], r["episode_id"], r["seed"])] += 1
    assert set(per.values()) == {len(ALGORITHMS)}


def test_same_seed_same_trials(base: Path, reference) -> None:
    again = run(base, "again")
    assert stable(again.out / "trials.csv") == stable(reference.out / "trials.csv")


def test_resume_after_kill_finishes_without_loss_or_duplicates(base: Path, reference,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # killed between two batches (the 4th batch is never logged), then in the middle of a write
    killed = kill_and_resume(lambda: run(base, "killed"), base / "killed" / "trials.jsonl", TrialLog, "extend", 3,
                             monkeypatch)
    kept, resumed, lines = killed.kept, killed.resumed, killed.lines
    assert len(kept) == sum(len(records) for records in killed.calls) < reference.planned
    assert resumed.complete and resumed.ran == reference.planned - len(kept)
    assert len(lines) == reference.planned and len({trial_key(json.loads(x)) for x in lines}) == len(lines)
    assert stable(base / "killed" / "trials.csv") == stable(reference.out / "trials.csv")
    assert run(base, "killed").ran == 0  # a finished grid reruns nothing


def test_shards_together_equal_the_whole_grid(base: Path, reference) -> None:
    results = [run(base, "sharded", shard=(i, 3)) for i in range(3)]
    assert [r.complete for r in results] == [False, False, True]
    assert sorted(p.name for p in (base / "sharded").glob("trials*.jsonl")) == [
        f"trials.shard-{i}-of-3.jsonl" for i in (1, 2, 3)]
    assert sum(r.ran for r in results) == reference.planned
    assert not any(r.reported for r in results) and not (base / "sharded" / "summary.md").exists()  # shards: no report
    assert main(["report", str(base / "sharded")]) == 0
    assert stable(base / "sharded" / "trials.csv") == stable(reference.out / "trials.csv")
    # the same shards run in folders of their own, then merged
    apart = [run(base, f"apart{i}", shard=(i, 2)).out for i in range(2)]
    assert main(["merge", str(base / "merged"), *map(str, apart)]) == 0
    assert stable(base / "merged" / "trials.csv") == stable(reference.out / "trials.csv")


def test_report_command_regenerates_from_records(base: Path, reference) -> None:
    folder = base / "copy"
    shutil.copytree(reference.out, folder)
    expected = (folder / "summary.csv").read_bytes()
    for name in ("summary.csv", "summary.md", "accuracy_vs_k.png", "trials.csv"):
        (folder / name).unlink()
    assert main(["report", str(folder)]) == 0
    assert (folder / "summary.csv").read_bytes() == expected
    assert (folder / "summary.md").is_file() and (folder / "accuracy_vs_k.png").stat().st_size > 10_000
    assert main(["report", str(base / "no-such-run")]) == 2
    expected_comparisons = (folder / "comparisons.csv").read_bytes()  # the run's report.reference: finetune
    assert main(["report", str(folder), "--reference", "fomaml"]) == 0
    with open(folder / "comparisons.csv", newline="") as f:
        assert {r["reference"] for r in csv.DictReader(f) if r["reference_pretune"] == r["pretune"]} == {"fomaml"}
    (folder / "config.yaml").write_text((folder / "config.yaml").read_text().replace(
        "reference: finetune", "reference: simpleshot"))
    assert main(["report", str(folder)]) == 0  # no flag: the run's own report.reference
    with open(folder / "comparisons.csv", newline="") as f:
        assert {r["reference"] for r in csv.DictReader(f) if r["reference_pretune"] == r["pretune"]} == {"simpleshot"}
    assert expected_comparisons != (folder / "comparisons.csv").read_bytes()


def test_folder_of_another_config_is_refused(base: Path, reference) -> None:
    with pytest.raises(MetalearnError, match="another config .*'episodes.repetitions': 2 in its config.yaml, 3 now"):
        run(base, "ref", "episodes.repetitions=3")
    assert run(base, "ref", "tracking.project=elsewhere").ran == 0  # tracking settings do not change numbers


def test_committed_tables_alone_do_not_count_as_done(base: Path, reference) -> None:
    """A fresh clone has results/<run>/trials.csv but no trial log: the run computes every trial again."""
    folder = base / "tables-only"
    shutil.copytree(reference.out, folder)
    for log in folder.glob("*.jsonl"):
        if log.name.startswith("trials"):
            log.unlink()
    again = run(base, "tables-only")
    assert again.ran == reference.planned and stable(folder / "trials.csv") == stable(reference.out / "trials.csv")


def test_bad_trial_log_line_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "trials.jsonl").write_text('{"run": "x"}\nnot json\n')
    with pytest.raises(MetalearnError, match=r"trials.jsonl:1: trial record lacks field"):
        read_trials(tmp_path)


def test_merge_refuses_conflicting_results(base: Path, reference, tmp_path: Path) -> None:
    records = read_trials(reference.out)
    changed = [{**r, "accuracy": 1.0 - r["accuracy"]} if i == 0 else r for i, r in enumerate(records)]
    TrialLog(tmp_path / "other" / "trials.jsonl").extend(changed)
    with pytest.raises(MetalearnError, match="appears twice with different results"):
        merge_runs([reference.out, tmp_path / "other"], tmp_path / "merged")


def test_paper_a_grid_is_33600_trials(tmp_path: Path) -> None:
    """16 variants x 20 ESD speakers x 5 targets x 7 k x 3 repetitions, at ESD's split sizes."""
    from metalearn.data.manifest import Utterance
    from metalearn.features.backbones import BackboneConfig
    from metalearn.pretune.subsets import enumerate_subsets, variant_name
    from metalearn.pretune.variant import PretuneVariant
    from metalearn.run.draw import build_episodes
    from metalearn.run.runner import plan, speaker_folds

    cfg = load_config("paper_a", [f"data.{k}.root=/x" for k in (
        "target", "sources.iemocap", "sources.msp_improv", "sources.mandarin_affective", "sources.msp_podcast")])
    sizes = {"evaluation": 20, "test": 30, "train": 300}
    rows = [Utterance(f"{s:04d}_{e}_{split}_{i}", f"{s}/{e}/{i}.wav", "esd", f"{s:04d}", "female", e, e, split, 2.0,
                      16000) for s in range(1, 21) for e in ("neutral", "happy", "angry", "sad", "surprise")
            for split, n in sizes.items() for i in range(n)]
    speakers = sorted({u.speaker for u in rows})
    folds = speaker_folds(cfg, speakers)
    episodes = {0: build_episodes(cfg, rows, speakers, 0, tmp_path)}
    variants = {variant_name(s): PretuneVariant(variant_name(s), tmp_path, "supervised", BackboneConfig(), None, s)
                for s in enumerate_subsets(["iemocap", "msp_improv", "mandarin_affective", "msp_podcast"])}
    units = plan(cfg, variants, folds, episodes)
    assert len(variants) == 16 and [f.test for f in folds] == [tuple(speakers)] and not folds[0].validation
    tuned = [u for u in units if u.algorithm == "full_finetune"]
    assert sum(len(u.episodes) for u in tuned) == 33_600
    assert {u.algorithm for u in units} == {"full_finetune", "majority"}  # the 80% line of every plot
    assert {u.variant for u in units if u.algorithm == "majority"} == {"none"}
    assert {len(e.support) for u in tuned for e in u.episodes} == {2, 4, 8, 16, 24, 32, 64}


def test_shards_need_prepared_variants(base: Path) -> None:
    """Shards side by side never train a variant; `--prepare` does it once, then shards start."""
    extra = (f"pretune.out={base / 'pretune-fresh'}",)
    with pytest.raises(MetalearnError, match=r"pretune variants \['none'\] are not trained .*--prepare"):
        run(base, "prep", *extra, shard=(0, 2))
    assert run_experiment(load_config(None, overrides(base, "prep", *extra, **TINY)), prepare_only=True) is None
    assert (base / "pretune-fresh" / "none" / "done.json").is_file()
    assert not list((base / "prep").glob("trials*.jsonl"))
    assert run(base, "prep", *extra, shard=(0, 2)).ran > 0


def test_committed_tables_of_an_older_config_do_not_block_a_fresh_run(base: Path, reference) -> None:
    """A fresh clone whose committed config.yaml predates a config change runs, and rewrites the folder."""
    folder = base / "old-tables"
    shutil.copytree(reference.out, folder)
    for log in folder.glob("*.jsonl"):
        log.unlink()
    result = run(base, "old-tables", "episodes.repetitions=1")
    assert result.complete and "repetitions: 1" in (folder / "config.yaml").read_text()


def test_episodes_imported_from_another_run_give_its_trials(base: Path, reference, tmp_path: Path) -> None:
    """episodes.source: the saved episode files of one run (the exchange format) scored in another folder give
    the same trials; a folder without them, or episodes naming clips this manifest lacks, is one line."""
    shared = tmp_path / "shared"
    shared.mkdir()
    for f in (base / "ref").glob("episodes-seed*.jsonl"):
        shutil.copy(f, shared / f.name)
    run(base, "imported", f"episodes.source={shared}")
    assert stable(base / "imported" / "trials.csv") == stable(base / "ref" / "trials.csv")
    with pytest.raises(MetalearnError, match="episodes.source.*no .*episodes-seed0.jsonl"):
        run(base, "imported2", f"episodes.source={tmp_path / 'nowhere'}")
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in shared.glob("*.jsonl"):
        (bad / f.name).write_text(f.read_text().replace('"support": ["', '"support": ["esd/missing', 1))
    with pytest.raises(MetalearnError, match=r"episodes-seed0.jsonl: 1 utterance keys are not in this run"):
        run(base, "imported3", f"episodes.source={bad}")
    assert not (base / "imported3" / "config.yaml").exists()  # refused before anything was written
