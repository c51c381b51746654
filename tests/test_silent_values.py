"""Every bad value refused up front: one line naming the key and the allowed range, before anything is written
(issue 24, cases 4 and 6: negative steps and lr were accepted; ``chunk=0`` was a traceback; ``speakers.test=[]``
and ``chunk=-3`` ended in "no trial records to report" after writing config.yaml, episodes and folds.json)."""

from __future__ import annotations

from pathlib import Path

import pytest

from metalearn.cli import main
from metalearn.configs.load import load_config
from metalearn.fewshot.algorithms.maml import MAMLConfig
from metalearn.fewshot.algorithms.protonet import ProtoNetConfig
from metalearn.fewshot.episodes import Episode
from metalearn.fewshot.trials import group_by_shape
from metalearn.util.errors import MetalearnError
from metalearn.util.ranges import problem

ROOT = "data.target.root=/x"


@pytest.mark.parametrize(("override", "expected"), [
    ("meta_train.steps=-5", "config key 'meta_train.steps': -5 must be >= 0"),
    ("meta_train.shots=0", "config key 'meta_train.shots': 0 must be >= 1"),
    ("meta_train.queries=0", "config key 'meta_train.queries': 0 must be >= 1"),
    ("meta_train.seeds=[]", "config key 'meta_train.seeds'"),
    ("chunk=0", "config key 'chunk': 0 must be >= 1"),
    ("chunk=-3", "config key 'chunk': -3 must be >= 1"),
    ("episodes.repetitions=0", "config key 'episodes.repetitions': 0 must be >= 1"),
    ("episodes.queries=0", "config key 'episodes.queries': 0 must be >= 1"),
    ("speakers.test=[]", "config key 'speakers.test': [] names no test speaker"),
    ("algorithms.maml.inner_lr=-1", "config key 'algorithms.maml.inner_lr': -1.0 must be > 0"),
    ("algorithms.metasgd.meta_lr=0", "config key 'algorithms.metasgd.meta_lr': 0.0 must be > 0"),
    ("algorithms.fomaml.inner_steps=0", "config key 'algorithms.fomaml.inner_steps': 0 must be >= 1"),
    ("algorithms.anil.hidden=[8,0]", "config key 'algorithms.anil.hidden'"),
    ("algorithms.protonet_proj.lr=-1e-3", "config key 'algorithms.protonet_proj.lr': -0.001 must be > 0"),
    ("algorithms.protonet.distance=manhattan", "'manhattan' is not one of sqeuclidean, cosine"),
    ("algorithms.reptile.test_steps=-1", "config key 'algorithms.reptile.test_steps': -1 must be >= 0"),
    ("algorithms.reptile.inner_optimizer=rmsprop", "config key 'algorithms.reptile.inner_optimizer'"),
    ("algorithms.simpleshot.meta_batch=0", "config key 'algorithms.simpleshot.meta_batch': 0 must be >= 1"),
    ("algorithms.transfer.test_lr=0", "config key 'algorithms.transfer.test_lr': 0.0 must be > 0"),
    ("algorithms.transfer.adapt=some", "config key 'algorithms.transfer.adapt'"),
    ("algorithms.finetune.lr=inf", "config key 'algorithms.finetune.lr': inf must be a finite number > 0"),
    ("tune.trials=0", "config key 'tune.trials': 0 must be >= 1"),
    ("tune.meta_steps=[0]", "config key 'tune.meta_steps': [0] must be a non-empty list of integers >= 1"),
    ("embeddings.batch_seconds=0", "config key 'embeddings.batch_seconds': 0.0 must be > 0"),
    ("embeddings.max_seconds=-1", "config key 'embeddings.max_seconds': -1.0 must be > 0"),
    ("episodes.ks=[1,", "override 'episodes.ks=[1,': the value of 'episodes.ks' is not valid YAML"),
])
def test_bad_value_is_one_line_naming_key_and_range(override: str, expected: str) -> None:
    with pytest.raises(MetalearnError) as err:
        load_config(None, [override, ROOT])
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_edges_of_the_ranges_pass() -> None:
    cfg = load_config(None, ["meta_train.steps=0", "chunk=1", "episodes.repetitions=1", "algorithms.maml.test_steps=0",
                             "speakers.test=[\"0011\"]", ROOT])
    assert cfg.meta_train.steps == 0 and cfg.chunk == 1 and cfg.algorithms.maml.test_steps == 0


def test_a_config_built_in_python_refuses_too() -> None:
    with pytest.raises(MetalearnError, match="MAMLConfig: inner_lr -1 must be > 0"):
        MAMLConfig(inner_lr=-1)
    with pytest.raises(MetalearnError, match="ProtoNetConfig: meta_batch 0 must be >= 1"):
        ProtoNetConfig(meta_batch=0)
    assert problem(True, ">= 0") and problem("3", "> 0") and problem(None, "> 0") is None


def test_zero_chunk_in_the_engine_is_one_line() -> None:
    episode = Episode("e0", "nway", "0011", 1, 0, 0, ("angry", "happy"), "", ("a", "b"), (0, 1), ("c", "d"), (0, 1))
    with pytest.raises(MetalearnError, match="chunk: 0 must be an integer >= 1"):
        group_by_shape([episode], 0)


@pytest.mark.parametrize("override", ["speakers.test=[]", "chunk=0", "meta_train.steps=-5"])
def test_run_with_a_bad_value_writes_nothing(tmp_path: Path, override: str, capsys: pytest.CaptureFixture) -> None:
    out, preset = tmp_path / "run", tmp_path / "tiny.yaml"
    preset.write_text("name: tiny\n")
    code = main(["run", "--config", str(preset), f"out={out}", f"data.manifests_dir={tmp_path / 'manifests'}",
                 f"data.target.root={tmp_path}", override])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and override.split("=")[0] in err
    assert not out.exists() and not (tmp_path / "manifests").exists()


# -- found by experiments/adversarial.py -----------------------------------------------------------------------


@pytest.mark.parametrize(("override", "key"), [("device=cuda:7", "device"),
                                               ("embeddings.device=tpu", "embeddings.device")])
def test_a_device_this_machine_lacks_is_refused_before_anything_is_written(override: str, key: str) -> None:
    from metalearn.run.stages import check_devices

    with pytest.raises(MetalearnError, match=f"config key '{key}': device") as err:
        check_devices(load_config(None, [override, ROOT]))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("argv", "expected"), [
    (["status", "RUN", "--shards", "0"], "argument --shards: 0: expected a number > 0"),
    (["embed", "--manifest", "m.csv", "--batch-seconds", "0"], "argument --batch-seconds: 0: expected a number > 0"),
    (["embed", "--manifest", "m.csv", "--max-seconds", "-1"], "argument --max-seconds: -1: expected a number > 0"),
])
def test_bad_command_line_numbers_are_one_line(argv: list[str], expected: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and expected in capsys.readouterr().err
