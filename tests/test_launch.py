"""The launcher (submitit): prepare -> shard array -> report on a tiny grid gives the trials of one unsharded
run; a preempted shard requeues itself and a killed one is finished by launching again; on SLURM the chain is
submitted with its dependencies and resources (a stand-in ``sbatch`` records the job scripts).

The in-process (``debug``) launch stays in the default suite; the ``local`` ones (subprocesses) are slow.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest

from metalearn.cli import main
from metalearn.configs.load import load_config
from metalearn.launch import jobs as launch
from metalearn.report.records import VOLATILE
from metalearn.run.runner import run_experiment
from tests.conftest import overrides, tiny_corpora

ALGORITHMS = ["simpleshot", "finetune"]
SHARD_JOB = launch.ShardJob


def tiny_base(factory: pytest.TempPathFactory) -> Path:
    """One tiny synthetic corpus (and its caches) for every test module of the session that asks."""
    root = factory.getbasetemp() / "launch-base"
    tiny_corpora(root / "data")
    (root / "tiny.yaml").write_text("name: tiny\n")
    return root


# the tiny run's options (tests/conftest.py); tests/test_status.py runs the same
TINY = {"algorithms": ALGORITHMS, "steps": 5, "meta_train": False, "chunk": 2}


def stable(path: Path) -> list[dict]:
    """trials.csv rows without the wall-time and run-name columns."""
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if k not in VOLATILE} for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_base(tmp_path_factory)


@pytest.fixture(scope="module")
def reference(base: Path):
    return run_experiment(load_config(str(base / "tiny.yaml"), overrides(base, "ref", **TINY)))


def launch_cli(base: Path, out: str, executor: str, shards: int = 3, *extra: str) -> int:
    return main(["launch", "--config", str(base / "tiny.yaml"), "--executor", executor, "--shards", str(shards),
                 *overrides(base, out, *extra, **TINY)])


def test_debug_launch_of_three_shards_equals_an_unsharded_run(base: Path, reference) -> None:
    assert launch_cli(base, "debug", "debug") == 0
    out = base / "debug"
    assert sorted(p.name for p in out.glob("trials*.jsonl")) == [f"trials.shard-{i}-of-3.jsonl" for i in (1, 2, 3)]
    assert sum(len(p.read_text().splitlines()) for p in out.glob("trials*.jsonl")) == reference.planned
    assert stable(out / "trials.csv") == stable(reference.out / "trials.csv")
    launched = json.loads((out / "launch.json").read_text())
    assert launched["executor"] == "debug" and launched["shards"] == 3
    assert set(launched["jobs"]) == {"prepare", "shards", "report"} and len(launched["jobs"]["shards"].split(",")) == 3
    assert launch_cli(base, "debug", "debug") == 0  # launched again: nothing left to run, nothing logged twice
    assert sum(len(p.read_text().splitlines()) for p in out.glob("trials*.jsonl")) == reference.planned


def test_wrong_launcher_values_are_one_line_before_any_job(base: Path, capsys: pytest.CaptureFixture) -> None:
    command = ["launch", "--config", str(base / "tiny.yaml")]
    cases = {("launcher.partiton=gpu",): "config key 'launcher.partiton'",
             ("launcher.executor=pbs",): "config key 'launcher.executor'",
             ("--executor", "debug", "launcher.cpus_per_task=0"): "config key 'launcher.cpus_per_task'",
             ("--executor", "debug", "--shards", "0"): "--shards 0",
             ("--executor", "debug", "launcher.after=77"): "config key 'launcher.after'",
             ("launcher.sbatch.dependency=afterok:1",): "config key 'launcher.sbatch.dependency'"}
    for extra, expected in cases.items():
        assert main([*command, *extra, *overrides(base, "refused", **TINY)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and expected in err and "\n" not in err
    if shutil.which("srun") is None:
        assert main([*command, "--executor", "slurm", *overrides(base, "refused", **TINY)]) == 2
        assert "config key 'launcher.executor': 'slurm' cannot be used here" in capsys.readouterr().err
    assert not (base / "refused" / "jobs").exists()


FAKE_SBATCH = """#!/bin/sh
# a stand-in sbatch: keeps the job script, answers like sbatch
n=$(cat "$FAKE_SLURM/count" 2>/dev/null || echo 100); n=$((n + 1)); echo "$n" > "$FAKE_SLURM/count"
cp "$1" "$FAKE_SLURM/$n.sh"
echo "Submitted batch job $n"
"""


def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``sbatch`` and ``srun`` stand-ins first on PATH; job scripts land in the returned folder as <id>.sh."""
    bin_dir, record = tmp_path / "bin", tmp_path / "sbatch"
    bin_dir.mkdir()
    record.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH)
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(record))
    return record


def sbatch_options(script: Path) -> dict[str, str]:
    """The ``#SBATCH --key=value`` lines of a job script."""
    lines = [x[len("#SBATCH --"):] for x in script.read_text().splitlines() if x.startswith("#SBATCH --")]
    return dict(x.split("=", 1) if "=" in x else (x, "") for x in lines)


def test_slurm_chain_has_its_dependencies_and_resources(base: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    record = fake_slurm(tmp_path, monkeypatch)
    assert launch_cli(base, "slurm", "slurm", 3, "launcher.partition=gpu", "launcher.account=proj",
                      "launcher.qos=high", "launcher.gpus_per_task=1", "launcher.cpus_per_task=8",
                      "launcher.mem_gb=32", "launcher.timeout_min=600", "launcher.array_parallelism=2",
                      "launcher.sbatch.constraint=a100", "launcher.setup=[module load cuda]",
                      "launcher.after=77") == 0
    prepare, shards, report = (sbatch_options(record / f"{n}.sh") for n in (101, 102, 103))
    for options in (prepare, shards, report):
        assert {k: options[k] for k in ("partition", "account", "qos", "cpus-per-task", "mem", "constraint")} == {
            "partition": "gpu", "account": "proj", "qos": "high", "cpus-per-task": "8", "mem": "32GB",
            "constraint": "a100"}
        assert options["signal"].startswith("USR2@")  # the requeue signal submitit handles
    assert "module load cuda" in (record / "101.sh").read_text()
    assert prepare["gpus-per-node"] == shards["gpus-per-node"] == "1" and "gpus-per-node" not in report
    assert prepare["time"] == shards["time"] == "600" and report["time"] == str(launch.REPORT_TIMEOUT_MIN)
    assert prepare["dependency"] == "afterok:77" and "array" not in prepare  # e.g. a DDP pre-finetuning job
    assert shards["array"] == "0-2%2" and shards["dependency"] == "afterok:101"
    assert report["dependency"] == "afterany:102" and "array" not in report
    assert prepare["kill-on-invalid-dep"] == shards["kill-on-invalid-dep"] == report["kill-on-invalid-dep"] == "yes"
    assert [o["job-name"] for o in (prepare, shards, report)] == ["tiny-prepare", "tiny-shard", "tiny-report"]
    jobs = base / "slurm" / "jobs"
    pickled = [cloudpickle.loads((jobs / f"102_{i}_submitted.pkl").read_bytes()).function for i in range(3)]
    assert [type(j).__name__ for j in pickled] == ["ShardJob"] * 3 and [j.shard for j in pickled] == [
        (0, 3), (1, 3), (2, 3)]
    launched = json.loads((base / "slurm" / "launch.json").read_text())
    assert launched["jobs"] == {"prepare": "101", "shards": "102_[0-2]", "report": "103"}


ARRAY_SCRIPT = Path(__file__).parents[1] / "experiments" / "slurm" / "array.sbatch"
STUB_PYTHON = """#!/bin/sh
echo "$@" > "$STUB_ARGS"
if [ -n "$STUB_HOLD" ]; then exec sleep 60; fi
"""


@pytest.mark.parametrize("preempted", [False, True])
def test_plain_sbatch_array_script_runs_its_shard_and_requeues_itself(tmp_path: Path, preempted: bool) -> None:
    """Array task 1 of 3 runs ``run --shard 2/3``; SIGUSR1 (time limit near, preemption) requeues the task."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\n')
    (bin_dir / "python").write_text(STUB_PYTHON)
    for tool in ("scontrol", "python"):
        (bin_dir / tool).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHON": str(bin_dir / "python"),
           "SLURM_ARRAY_JOB_ID": "9", "SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "3",
           "STUB_ARGS": str(tmp_path / "args"), "STUB_HOLD": "1" if preempted else ""}
    task = subprocess.Popen(["bash", str(ARRAY_SCRIPT), "paper_a", "seeds=[0]"], env=env, stdout=subprocess.PIPE,
                            text=True)
    if preempted:
        deadline = time.monotonic() + 30
        while not (tmp_path / "args").is_file() and time.monotonic() < deadline:
            time.sleep(0.05)
        task.send_signal(signal.SIGUSR1)
    task.wait(timeout=30)
    assert (tmp_path / "args").read_text().split() == ["-m", "metalearn", "run", "--config", "paper_a", "--shard",
                                                         "2/3", "seeds=[0]"]
    if preempted:
        assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "9_1"] and task.returncode != 0
        assert "requeueing 9_1" in task.stdout.read()
    else:
        assert task.returncode == 0 and not (tmp_path / "scontrol.log").exists()


def after_first_batch(sig: signal.Signals) -> None:
    """Make this process send itself ``sig`` once its first scored batch is logged (patched in the job, whose
    groups are scored in its own process: workers=1)."""
    from metalearn.run import scoring

    real = scoring.score_group

    def scored(*args, **kwargs):
        for i, item in enumerate(real(*args, **kwargs)):
            yield item
            if i == 0:  # the runner has logged this batch and asks for the next
                os.kill(os.getpid(), sig)

    scoring.score_group = scored


class PreemptedOnce(launch.ShardJob):
    """Shard 2 is preempted (SIGUSR2, what SLURM's --signal sends) after its first batch, on its first try."""

    def __call__(self):
        if self.shard[0] == 1 and not getattr(self, "preempted", False):
            self.preempted = True  # part of the state checkpoint() resubmits
            after_first_batch(signal.SIGUSR2)
        return super().__call__()


class KilledOnce(launch.ShardJob):
    """Shard 2 is killed (SIGKILL: no handler, no cleanup) after its first batch."""

    def __call__(self):
        if self.shard[0] == 1:
            after_first_batch(signal.SIGKILL)
        return super().__call__()


@pytest.fixture
def job_classes_by_value():
    """This module's job classes travel to the job processes by value (they import metalearn, not tests)."""
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def lines(out: Path, shard: int) -> list[str]:
    return (out / f"trials.shard-{shard}-of-3.jsonl").read_text().splitlines()


@pytest.mark.slow
def test_local_launch_with_a_preempted_shard_equals_an_unsharded_run(base: Path, reference, job_classes_by_value,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch, "ShardJob", PreemptedOnce)
    assert launch_cli(base, "local", "local", 3, "workers=1") == 0
    out = base / "local"
    assert stable(out / "trials.csv") == stable(reference.out / "trials.csv")
    assert sum(len(lines(out, i)) for i in (1, 2, 3)) == reference.planned  # nothing twice
    shard2 = json.loads((out / "launch.json").read_text())["jobs"]["shards"].split(",")[1]
    log = (out / "jobs" / f"{shard2}_0_log.err").read_text()
    assert "this job is preempted" in log and "Requeued job" in log


@pytest.mark.slow
def test_killed_shard_is_finished_by_launching_again(base: Path, reference, job_classes_by_value,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(launch, "ShardJob", KilledOnce)
    assert launch_cli(base, "killed", "local", 3, "workers=1") == 2
    err = capsys.readouterr().err
    assert "shard 2/3 (job " in err and "was killed before it finished" in err and "\n" not in err.strip()
    out = base / "killed"
    kept = lines(out, 2)
    assert 0 < len(kept) and (out / "trials.csv").is_file()  # the report job ran on what the array left
    assert main(["status", str(out)]) == 0
    status = capsys.readouterr().out.splitlines()
    assert "complete" not in status[1] and "  running: nothing" in status
    row = next(x.split() for x in status if x.strip().startswith("2/3"))
    assert int(row[1]) == len(kept) < int(row[2]) and row[3:] == ["not", "running"]
    monkeypatch.setattr(launch, "ShardJob", SHARD_JOB)
    assert launch_cli(base, "killed", "local", 3, "workers=1") == 0
    assert lines(out, 2)[: len(kept)] == kept  # finished trials were kept, not rerun
    assert sum(len(lines(out, i)) for i in (1, 2, 3)) == reference.planned
    assert stable(out / "trials.csv") == stable(reference.out / "trials.csv")


def test_the_job_folder_is_private_to_the_user(tmp_path: Path) -> None:
    """submitit's pickles run code when loaded: the folder they live in is made 0700 (one line when it cannot be)."""
    from metalearn.util.errors import MetalearnError

    private_folder = launch.private_folder
    folder = tmp_path / "jobs"
    folder.mkdir(mode=0o777)
    folder.chmod(0o777)
    assert private_folder(folder) == folder and (folder.stat().st_mode & 0o777) == 0o700
    with pytest.raises(MetalearnError, match="cannot make .* private to this user .* pickles"):
        private_folder(tmp_path / "missing")
