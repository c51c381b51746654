"""The notebook API (``import metalearn``): light to import, a config from dict overrides, a run (or one stage)
on a tiny corpus, its records as a table, comparisons, an adapter on tensors; and the example script on the
tiny synthetic corpus (slow)."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import metalearn
from metalearn.data.manifest import Utterance, write_manifest
from metalearn.report.compare import COMPARISON_FIELDS
from metalearn.report.summary import SUMMARY_FIELDS
from metalearn.util.errors import MetalearnError
from tests.fixtures import write_wav

REPO = Path(__file__).resolve().parents[1]
FREQ = {"neutral": 150.0, "happy": 300.0, "angry": 450.0}


def test_import_metalearn_is_light_and_names_resolve_lazily() -> None:
    code = "import sys, metalearn; print(sorted(m for m in ('torch', 'transformers', 'omegaconf') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr
    import metalearn.api as api

    for name in metalearn.__all__:
        assert getattr(metalearn, name) is (metalearn.__version__ if name == "__version__" else getattr(api, name))
    assert set(metalearn.__all__) - {"__version__"} <= set(api.__all__)
    with pytest.raises(AttributeError):
        metalearn.no_such_name  # noqa: B018


def test_load_config_takes_dict_or_strings() -> None:
    as_dict = metalearn.load_config("demo", {"episodes.ks": [1, 5], "tracking.wandb": False, "name": "mine",
                                             "episodes.queries": None, "algorithms.maml.inner_lr": 0.25})
    as_strings = metalearn.load_config("demo", ["episodes.ks=[1,5]", "tracking.wandb=false", "name=mine",
                                                "episodes.queries=null", "algorithms.maml.inner_lr=0.25"])
    assert as_dict == as_strings and as_dict.episodes.ks == [1, 5] and as_dict.tracking.wandb is False
    assert as_dict.name == "mine" and as_dict.algorithms.maml.inner_lr == 0.25
    with pytest.raises(MetalearnError, match="episodes.kz"):
        metalearn.load_config("demo", {"episodes.kz": [1]})
    with pytest.raises(MetalearnError, match="expected a list of key=value strings or a dict"):
        metalearn.load_config("demo", "episodes.ks=[1]")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A 3-speaker, 3-emotion corpus of tones given as a manifest, and the overrides of a one-k grid on it."""
    root = tmp_path_factory.mktemp("api")
    rng, rows = np.random.default_rng(0), []
    for s in ("s1", "s2", "s3"):
        for e, f in FREQ.items():
            for split, n in (("train", 3), ("test", 2)):
                for j in range(n):
                    uid = f"{s}_{e}_{split}_{j}"
                    t = np.arange(4800) / 16_000
                    x = 0.3 * np.sin(2 * np.pi * f * t) + 0.02 * rng.standard_normal(t.shape)
                    path = write_wav(root / "wav" / f"{uid}.wav", data=x.astype(np.float32))
                    rows.append(Utterance(uid, str(path), "esd", s, "female", e, e, split, 0.3, 16_000))
    manifest = write_manifest(rows, root / "esd.csv")
    overrides = {"out": str(root / "run"), "data.target.root": str(root), "data.target.manifest": str(manifest),
                 "backbone.source": "tiny", "pretune.subsets": ["none"], "pretune.out": str(root / "pretune"),
                 "embeddings.cache_dir": str(root / "cache"), "episodes.ks": [1], "episodes.repetitions": 2,
                 "speakers.folds": 3, "algorithms.run": ["simpleshot", "protonet", "majority"],
                 "report.reference": "simpleshot", "tracking.wandb": False}
    return {"rows": rows, "overrides": overrides}


def test_run_one_stage_then_all_and_read_the_tables(tiny: dict) -> None:
    cfg = metalearn.load_config(None, tiny["overrides"])
    rows = metalearn.run_experiment(cfg, stage="manifest")
    assert [u.utterance_id for u in rows] == [u.utterance_id for u in tiny["rows"]]
    with pytest.raises(MetalearnError, match="stage 'trials'"):
        metalearn.run_experiment(cfg, stage="trials")
    with pytest.raises(MetalearnError, match="only stage 'all' runs in shards"):
        metalearn.run_experiment(cfg, stage="prepare", shard="1/2")
    result = metalearn.run_experiment(cfg)
    assert isinstance(result, metalearn.RunResult) and result.complete
    trials = metalearn.records(result)
    assert trials == metalearn.records(result.out) and len(trials) == result.planned == 3 * 3 * 2
    assert all(isinstance(r["accuracy"], float) and isinstance(r["k"], int) for r in trials)
    summary = metalearn.summary(result.out)
    assert summary == metalearn.summary(trials) and all(set(SUMMARY_FIELDS) <= set(r) for r in summary)
    assert {r["algorithm"] for r in summary} == {"simpleshot", "protonet", "majority"}
    assert sum(r["n_trials"] for r in summary) == len(trials) and all(r["n_speakers"] == 3 for r in summary)
    comparisons = metalearn.comparisons(trials, reference="simpleshot")
    assert comparisons and all(list(r) == list(COMPARISON_FIELDS) for r in comparisons)
    assert {r["algorithm"] for r in comparisons} == {"protonet", "majority"}
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(MetalearnError, match="needs pandas"):
            metalearn.to_dataframe(summary)
    else:
        assert metalearn.to_dataframe(summary).shape[0] == len(summary)


def test_adapter_on_tensors() -> None:
    """ProtoNet built by name on two well-separated classes scores every query right; logits [E, Q, W]."""
    g = torch.Generator().manual_seed(0)
    centres = 4 * torch.randn(2, 8, generator=g)
    support_y = torch.tensor([[0, 0, 1, 1], [1, 1, 0, 0]])
    query_y = torch.tensor([[0, 1, 1], [1, 0, 0]])
    support_x = centres[support_y] + 0.1 * torch.randn(2, 4, 8, generator=g)
    query_x = centres[query_y] + 0.1 * torch.randn(2, 3, 8, generator=g)
    assert "protonet" in metalearn.ALGORITHMS
    adapter = metalearn.build_adapter("protonet", metalearn.AdapterSpec(dim=8, ways=2))
    logits = adapter.predict(support_x, support_y, query_x, 2)
    assert logits.shape == (2, 3, 2) and torch.equal(logits.argmax(-1), query_y)
    with pytest.raises(MetalearnError, match="unknown option"):
        metalearn.build_adapter("protonet", metalearn.AdapterSpec(dim=8, ways=2), {"no_such_option": 1})


@pytest.mark.slow
def test_example_runs_on_the_tiny_corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """examples/quickstart.py --tiny, run from a folder outside the repository."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["quickstart.py", "--work", "qs", "--tiny"])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(REPO / "examples" / "quickstart.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert done.value.code == 0
    assert "trials in qs/results" in out and "query accuracy 1.00" in out
    assert (tmp_path / "qs" / "results" / "summary.csv").is_file()
