"""The ``launcher`` config section (where and how ``launch`` submits jobs) and its mapping onto submitit."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from metalearn.util.errors import MetalearnError

EXECUTORS = ("auto", "slurm", "local", "debug")  # auto: slurm where srun is found, else local


@dataclass
class LauncherConfig:
    """The ``launcher`` section: where and with what each job runs (submitit's parameters).

    Every job asks for ``cpus_per_task``, ``mem_gb`` and ``timeout_min``; prepare and shards also for
    ``gpus_per_task`` GPUs (the report job for none). ``sbatch`` adds any other ``#SBATCH`` option
    (e.g. {constraint: a100, mail-type: END}); ``setup`` holds shell lines run before each job
    (module load, activating an environment).
    """

    executor: str = "auto"            # slurm, local (subprocesses on this machine), debug (in process), auto
    partition: str | None = None      # SLURM partition, account and quality of service
    account: str | None = None
    qos: str | None = None
    gpus_per_task: int = 0            # GPUs of each prepare and shard job
    cpus_per_task: int = 4
    mem_gb: float | None = None       # None: the partition's default
    timeout_min: int = 240            # time limit of each job; a timed-out job requeues itself
    max_requeue: int = 3              # how many time-outs a job may requeue after (preemptions do not count)
    array_parallelism: int = 256      # shards running at once (local: waves of this many)
    sbatch: dict[str, str] = field(default_factory=dict)  # extra sbatch options, without the leading --
    setup: list[str] = field(default_factory=list)        # shell lines before each job
    folder: str = ""                  # submitit's job files and logs ("" = {out}/jobs)
    after: str = ""                   # SLURM job id(s), a:b, the prepare job waits for (afterok): e.g. a DDP
                                      # pre-finetuning node job submitted before (docs/clusters.md)


def check_launcher(launcher: LauncherConfig) -> None:
    """One-line errors for values no type can refuse."""
    if launcher.executor not in EXECUTORS:
        raise MetalearnError(f"config key 'launcher.executor': {launcher.executor!r} is not one of {EXECUTORS}")
    for key in ("cpus_per_task", "timeout_min", "array_parallelism"):
        if getattr(launcher, key) < 1:
            raise MetalearnError(f"config key 'launcher.{key}': {getattr(launcher, key)} must be >= 1")
    for key in ("gpus_per_task", "max_requeue"):
        if getattr(launcher, key) < 0:
            raise MetalearnError(f"config key 'launcher.{key}': {getattr(launcher, key)} must be >= 0")
    if "dependency" in launcher.sbatch:
        raise MetalearnError("config key 'launcher.sbatch.dependency': the launcher sets each job's dependency; "
                             "to make the run wait for other jobs use launcher.after=JOBID")
    if launcher.mem_gb is not None and launcher.mem_gb <= 0:
        raise MetalearnError(f"config key 'launcher.mem_gb': {launcher.mem_gb} must be > 0 (or null)")


def job_parameters(launcher: LauncherConfig, name: str, gpus: int, timeout_min: int,
                   dependency: str | None = None) -> dict[str, Any]:
    """submitit ``AutoExecutor.update_parameters`` keywords of one job (None values are left unset)."""
    extra = dict(launcher.sbatch)
    if dependency:
        extra.setdefault("kill-on-invalid-dep", "yes")  # a failed prepare cancels the shards, not strands them
    return {"name": name, "timeout_min": timeout_min, "cpus_per_task": launcher.cpus_per_task,
            "gpus_per_node": gpus or None, "tasks_per_node": 1, "mem_gb": launcher.mem_gb,
            "slurm_partition": launcher.partition, "slurm_account": launcher.account, "slurm_qos": launcher.qos,
            "slurm_array_parallelism": launcher.array_parallelism, "slurm_dependency": dependency,
            "slurm_additional_parameters": extra, "slurm_setup": list(launcher.setup),
            "local_setup": list(launcher.setup)}
