"""A run's late failures: config checks before anything is written, and clips unreadable after the manifest
(skip records, so the grid completes and reruns recompute nothing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metalearn.configs.load import load_config, saved_config
from metalearn.data.manifest import read_manifest, utterance_key
from metalearn.launch.status import run_status
from metalearn.report.records import merge_runs, read_skips, read_trials
from metalearn.run.runner import run_experiment
from metalearn.util.errors import MetalearnError
from tests.conftest import overrides, tiny_corpora

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("run_checks")
    tiny_corpora(root / "data")
    return root


def config(base: Path, out: str, *extra: str):
    return load_config(None, overrides(base, out, *extra, algorithms=["finetune", "fomaml"], steps=5, ks=[1],
                                       chunk=4))


def written(folder: Path) -> list[str]:
    """What a run left in ``folder`` besides its lock files."""
    return sorted(p.name for p in folder.iterdir() if p.name != ".locks") if folder.is_dir() else []


@pytest.mark.parametrize(("extra", "message"), [
    ("algorithms.only.fomaml.variants=[nonee]", r"'algorithms.only.fomaml.variants': \['nonee'\] are not among"),
    ("meta_train.seeds=[1,1]", r"'meta_train.seeds': \[1, 1\] must be distinct"),
    ("episodes.ks=[40]", "no episode could be drawn"),
])
def test_a_config_mistake_writes_nothing_and_the_corrected_command_runs(base: Path, extra: str, message: str) -> None:
    out = f"mistake-{extra.split('=')[0]}"
    with pytest.raises(MetalearnError, match=message):
        run_experiment(config(base, out, extra))
    assert written(base / out) == []  # no config.yaml, episodes, folds.json or run.json
    assert run_experiment(config(base, out)).complete


def test_a_clip_unreadable_after_the_manifest_gives_skip_records(base: Path, tmp_path: Path) -> None:
    """The run completes with the episodes that need the clip skipped (the reason names it), the report and
    status count them, and a rerun recomputes nothing."""
    cfg = config(base, "unreadable", f"embeddings.cache_dir={tmp_path / 'cache'}")
    assert run_experiment(cfg, prepare_only=True) is None  # manifest, episodes, embeddings
    rows = read_manifest(base / "manifests" / "esd.csv")
    victim = next(u for u in rows if u.speaker == "0012" and u.split == "test")
    saved = Path(victim.path).read_bytes()
    try:
        Path(victim.path).write_bytes(b"not audio any more")  # changed on disk: re-extracted, unreadable
        result = run_experiment(cfg)
        again = run_experiment(cfg)
    finally:
        Path(victim.path).write_bytes(saved)
    key = utterance_key(victim)
    episodes = [json.loads(x) for x in (base / "unreadable" / "episodes-seed0.jsonl").read_text().splitlines()]
    needing = {e["episode_id"] for e in episodes if key in (*e["support"], *e["query"], *e.get("validation", []))}
    skips = read_skips(result.out)
    assert needing and {s["episode_id"] for s in skips} == needing
    assert result.complete and result.done == result.planned and result.skipped == len(skips) == 2 * len(needing)
    assert {s["reason"] for s in skips} == {f"no embedding for {key} (unreadable file)"} and key in result.skip_reasons
    assert len(read_trials(result.out)) == result.planned - result.skipped
    assert f"{result.skipped} trials skipped: no embedding for {key}" in (result.out / "summary.md").read_text()
    assert again.complete and again.ran == 0 and again.skipped == result.skipped
    assert (result.out / "skipped.jsonl").read_text().count("\n") == result.skipped  # nothing logged twice
    status = run_status(saved_config(result.out))
    assert [(s.done, s.planned) for s in status.shards] == [(result.planned, result.planned)]
    merge_runs([result.out], tmp_path / "merged")  # shards run apart carry their skips into the merged folder
    assert read_skips(tmp_path / "merged") == skips


def test_variant_names_follow_from_the_config_without_training(base: Path) -> None:
    """What prepare_variants will name (supervised subsets, CLAP losses, extra variants), known before any
    training, so algorithms.only.*.variants is checked before anything is written."""
    from metalearn.pretune.subsets import enumerate_subsets, variant_name
    from metalearn.run.planning import check_grid, variant_names

    sources = [f"data.sources.{c}.{k}={v}" for c in ("iemocap", "msp_podcast")
               for k, v in (("corpus", c), ("root", base / "data" / c))]
    cfg = config(base, "names", *sources, "pretune.subsets=[all]", "pretune.clap.losses=[emo,sl]",
                 "pretune.clap.corpora=all", "pretune.extra={mine: /nowhere}")
    names = variant_names(cfg)
    assert names == [*(variant_name(s) for s in enumerate_subsets(["iemocap", "msp_podcast"])),
                     "clap-emo-iemocap+msp_podcast", "clap-sl-iemocap+msp_podcast", "mine"]
    assert names[:2] == ["none", "pft-iemocap"] and not (base / "pretune" / "pft-iemocap").exists()
    check_grid(cfg, names)
    with pytest.raises(MetalearnError, match=r"\['pft-iemocapp'\] are not among this run's pretune variants"):
        check_grid(config(base, "names", "algorithms.only.fomaml.variants=[pft-iemocapp]"), names)
    with pytest.raises(MetalearnError, match="pretune.clap.corpora"):
        variant_names(config(base, "names", *sources, "pretune.clap.losses=[emo]", "pretune.clap.corpora=cremad"))
