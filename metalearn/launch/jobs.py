"""``python -m metalearn launch``: a run's grid as jobs on a cluster (SLURM) or this machine, through submitit.

Three steps, each a submitit job: **prepare** (``run --prepare``: manifests, pretune variants, episodes,
embedding caches), then the **shards** (a SLURM job array, ``run --shard I/N`` each) once prepare has
succeeded (``afterok``), then **report** (tables, figures, and the W&B mirror when the grid is complete)
once every shard has ended (``afterany``). On SLURM the launcher submits the chain and returns; the
``local`` executor (subprocesses) and the ``debug`` executor (in this process) run the steps in order and
wait. A preempted or timed-out job requeues itself (submitit's ``checkpoint``): the run folder is the
checkpoint, so a requeued shard skips the trials that have records and a requeued prepare skips the
stages that exist. Running the same ``launch`` again finishes whatever a killed job left undone.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metalearn.launch.config import LauncherConfig, check_launcher, job_parameters
from metalearn.util.errors import MetalearnError
from metalearn.util.fileio import make_folder, write_json
from metalearn.util.yaml_ids import from_dotlist

if TYPE_CHECKING:
    from metalearn.run.config import ExperimentConfig
    from metalearn.run.runner import RunResult

log = logging.getLogger(__name__)
REPORT_TIMEOUT_MIN = 60   # the report job's time limit (it reads logs, writes tables, uploads to W&B)


class _Requeueable:
    """A job submitit requeues when preempted or timed out, unchanged: the run folder is its checkpoint."""

    def checkpoint(self, *args: Any, **kwargs: Any):
        from submitit.helpers import DelayedSubmission

        log.warning("%s: preempted or timed out; requeued, it resumes from the run folder", self)
        return DelayedSubmission(self, *args, **kwargs)


def _job_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


@dataclass
class PrepareJob(_Requeueable):
    """``run --prepare``: manifests, pretune variants, episodes and embedding caches, once, before the shards;
    then the plan, saved for ``status`` (``plan.json``: it counts trials without planning or torch)."""

    cfg: ExperimentConfig

    def __call__(self) -> None:
        from metalearn.launch.plan_file import write_plan
        from metalearn.launch.status import plan_grid
        from metalearn.run.runner import run_experiment

        _job_logging()
        run_experiment(self.cfg, (0, 1), prepare_only=True)
        write_plan(Path(self.cfg.out), plan_grid(self.cfg))


@dataclass
class ShardJob(_Requeueable):
    """``run --shard I/N``: shard ``(index, count)`` of the grid (0-based); skips trials with records."""

    cfg: ExperimentConfig
    shard: tuple[int, int]

    def __call__(self) -> RunResult:
        from metalearn.run.runner import run_experiment

        _job_logging()
        return run_experiment(self.cfg, self.shard)


@dataclass
class ReportJob(_Requeueable):
    """Tables and figures from every record, and the W&B mirror when the grid is complete (holds the folder).

    It reports under the shards' own config (tuned values included: the loader read them), as a last shard would.
    """

    cfg: ExperimentConfig

    def __call__(self) -> RunResult:
        from metalearn.launch.status import plan_grid
        from metalearn.run.runner import finish
        from metalearn.util.lock import run_lock

        _job_logging()
        with run_lock(self.cfg.out, (0, 1)):
            return finish(self.cfg, Path(self.cfg.out), plan_grid(self.cfg), 0)


@dataclass
class Launched:
    """What ``launch`` did: the executor, job ids, where the logs are, and (local, debug) how it ended."""

    executor: str
    jobs: dict[str, str]
    logs: Path
    result: RunResult | None = None               # the report job's result (local, debug)
    problems: list[str] = field(default_factory=list)  # jobs that failed or were killed, one line each


def launch(cfg: ExperimentConfig, launcher: LauncherConfig, shards: int) -> Launched:
    """Submit ``cfg``'s grid as prepare -> ``shards`` shards -> report (see the module docstring).

    Checks before submitting anything: the launcher values, the corpus roots, that ``cfg.out`` holds no
    work of another config and that no process holds it now.
    """
    from metalearn.launch.status import running
    from metalearn.run.run_folder import check_same_config, to_yaml
    from metalearn.run.stages import check_roots

    check_launcher(launcher)
    if shards < 1:
        raise MetalearnError(f"--shards {shards}: expected N >= 1")
    cluster = _cluster(launcher.executor)
    if launcher.after and cluster != "slurm":
        raise MetalearnError(f"config key 'launcher.after': waiting for SLURM job {launcher.after} needs the slurm "
                             f"executor, not {cluster}")
    out = make_folder(cfg.out, "run folder out=")
    check_roots(cfg)
    check_same_config(out, to_yaml(cfg), to_yaml(type(cfg)))
    if busy := running(out):
        raise MetalearnError(f"{out} is in use by {next(iter(busy.values()))}; wait for it to finish or stop it")
    logs = private_folder(make_folder(launcher.folder or out / "jobs", "launcher.folder"))
    done = Launched(cluster, {}, logs)
    (_submit_chain if done.executor == "slurm" else _run_in_order)(cfg, launcher, shards, done)
    return done


def private_folder(folder: Path) -> Path:
    """``folder`` readable and writable by this user only (mode 0700): submitit's job files are pickles, and
    unpickling runs code, so nobody else may write (or read) them. A folder this user cannot change is one line."""
    try:
        folder.chmod(0o700)
    except OSError as e:
        raise MetalearnError(f"config key 'launcher.folder': cannot make {folder} private to this user "
                             f"({e.strerror or e}); submitit's job files are pickles that run code when loaded, so "
                             f"they need a folder you own") from None
    return folder


def _cluster(executor: str) -> str:
    """The submitit cluster of ``launcher.executor``: auto is slurm where ``srun`` is found (submitit's own
    rule), else local; slurm without ``srun`` is refused."""
    has_slurm = shutil.which("srun") is not None
    if executor == "auto":
        return "slurm" if has_slurm else "local"
    if executor == "slurm" and not has_slurm:
        raise MetalearnError("config key 'launcher.executor': 'slurm' cannot be used here (no srun on PATH); "
                             "run launch on a SLURM login node, or use --executor local or debug")
    return executor


def _executor(launcher: LauncherConfig, logs: Path, step: dict[str, Any]):
    """A submitit executor writing into ``logs``, with one step's :func:`job_parameters` ``step``."""
    import submitit

    executor = submitit.AutoExecutor(folder=logs, cluster=_cluster(launcher.executor),
                                     slurm_max_num_timeout=launcher.max_requeue,
                                     local_max_num_timeout=launcher.max_requeue)
    executor.update_parameters(**step)
    return executor


def _record(cfg: ExperimentConfig, done: Launched, shards: int) -> None:
    """``launch.json`` in the run folder: what ``status`` shows about the jobs."""
    from metalearn.launch.status import LAUNCH_FILE

    write_json(Path(cfg.out) / LAUNCH_FILE, {"executor": done.executor, "shards": shards, "jobs": done.jobs,
                                             "logs": str(done.logs), "submitted": time.time()})


def _submit_chain(cfg: ExperimentConfig, launcher: LauncherConfig, shards: int, done: Launched) -> None:
    """SLURM: submit prepare, the shard array (afterok prepare), report (afterany array); do not wait."""
    name, gpus, minutes = cfg.name, launcher.gpus_per_task, launcher.timeout_min
    step = job_parameters(launcher, f"{name}-prepare", gpus, minutes,
                          f"afterok:{launcher.after}" if launcher.after else None)
    prepare = _executor(launcher, done.logs, step).submit(PrepareJob(cfg))
    executor = _executor(launcher, done.logs,
                         job_parameters(launcher, f"{name}-shard", gpus, minutes, f"afterok:{prepare.job_id}"))
    with executor.batch():  # one job array
        jobs = [executor.submit(ShardJob(cfg, (i, shards))) for i in range(shards)]
    array = jobs[0].job_id.split("_")[0]
    step = job_parameters(launcher, f"{name}-report", 0, REPORT_TIMEOUT_MIN, f"afterany:{array}")
    report = _executor(launcher, done.logs, step).submit(ReportJob(cfg))
    done.jobs = {"prepare": prepare.job_id, "shards": f"{array}_[0-{shards - 1}]" if shards > 1 else array,
                 "report": report.job_id}
    _record(cfg, done, shards)


def _run_in_order(cfg: ExperimentConfig, launcher: LauncherConfig, shards: int, done: Launched) -> None:
    """local and debug: prepare, then the shards (``array_parallelism`` at a time), then report, waiting."""
    name, gpus, minutes = cfg.name, launcher.gpus_per_task, launcher.timeout_min
    prepare = _executor(launcher, done.logs, job_parameters(launcher, f"{name}-prepare", gpus, minutes)
                        ).submit(PrepareJob(cfg))
    done.jobs["prepare"] = prepare.job_id
    _record(cfg, done, shards)
    _, problem = _outcome(prepare, "prepare")
    if problem:
        raise MetalearnError(problem)
    executor = _executor(launcher, done.logs, job_parameters(launcher, f"{name}-shard", gpus, minutes))
    ids: list[str] = []
    for start in range(0, shards, launcher.array_parallelism):
        wave = [executor.submit(ShardJob(cfg, (i, shards)))
                for i in range(start, min(shards, start + launcher.array_parallelism))]
        ids += [j.job_id for j in wave]
        done.jobs["shards"] = ",".join(ids)
        _record(cfg, done, shards)
        done.problems += [p for i, j in enumerate(wave, start) if (p := _outcome(j, f"shard {i + 1}/{shards}")[1])]
    report = _executor(launcher, done.logs, job_parameters(launcher, f"{name}-report", 0, REPORT_TIMEOUT_MIN)
                       ).submit(ReportJob(cfg))
    done.jobs["report"] = report.job_id
    _record(cfg, done, shards)
    done.result, problem = _outcome(report, "report")
    done.problems += [problem] if problem else []


def _outcome(job, what: str) -> tuple[Any, str | None]:
    """Wait for ``job`` (a debug job runs now, here): (its result, None), or (None, one line saying how it
    failed and where its log is)."""
    from submitit.core.utils import UncompletedJobError
    from submitit.local.debug import DebugJob

    if isinstance(job, DebugJob):  # its exception() runs it without submitit's post-mortem debugger
        error = job.exception()
        if error is None:
            return job.result(), None
        if isinstance(error, MetalearnError):
            return None, f"{what} failed: {error}"
        raise error
    job.wait()
    if not job.paths.result_pickle.exists():
        return None, f"{what} (job {job.job_id}) was killed before it finished; log: {job.paths.stderr}"
    try:
        return job.result(), None
    except UncompletedJobError as e:  # the job raised: its trace's last "...Error: message" line says why
        lines = [x.strip() for x in str(e).splitlines() if x.strip() and not x.startswith(("-", " "))]
        cause = next((x.split(": ", 1)[1] for x in reversed(lines) if "Error: " in x), lines[-1] if lines else "")
        return None, f"{what} (job {job.job_id}) failed: {cause}; log: {job.paths.stderr}"


def main(cfg: ExperimentConfig, launcher: LauncherConfig, shards: int) -> int:
    """``python -m metalearn launch``: submit (SLURM) or run (local, debug) the grid; print where it went."""
    done = launch(cfg, launcher, shards)
    jobs = ", ".join(f"{k} {v}" for k, v in done.jobs.items())
    print(f"{done.executor}: {jobs}; job logs in {done.logs}/")
    if done.executor == "slurm":
        print(f"follow it with: python -m metalearn status {cfg.out}")
        return 0
    if done.result is not None:
        from metalearn.report.records import read_trials
        from metalearn.report.summary import summarize
        from metalearn.report.tables import summary_table

        print(summary_table(summarize(read_trials(done.result.out))))
        state = "complete" if done.result.complete else "incomplete"
        print(f"{done.result.done}/{done.result.planned} trials, {state}; results in {done.result.out}/")
    if done.problems:
        raise MetalearnError("; ".join(done.problems) + " (run the same launch again to finish; finished trials "
                             "are kept)")
    return 0


def launcher_from(cfg: ExperimentConfig, overrides: list[str], executor: str | None = None) -> LauncherConfig:
    """The run's ``launcher`` section (its config's, when the schema has one), then ``launcher.*`` overrides,
    then ``--executor``; checked."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    base = getattr(cfg, "launcher", None) or LauncherConfig()
    mine = [o.split(".", 1)[1] for o in overrides if o.startswith("launcher.")]
    try:
        launcher = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(base), from_dotlist(mine)))
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        raise MetalearnError(f"config key 'launcher.{key}': {str(e).splitlines()[0]}; valid keys: "
                             f"{', '.join(asdict(LauncherConfig()))}") from None
    if executor:
        launcher.executor = executor
    check_launcher(launcher)
    return launcher
