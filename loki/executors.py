"""datatrove executors for the data jobs (``loki filter``, ``loki tokenize``, ``loki distill build``).

One ``executor`` block picks where the tasks run:

- ``local``: datatrove's LocalPipelineExecutor, jobs one after the other on this machine;
- ``ray``: RayPipelineExecutor, jobs one after the other, each job's tasks spread over the Ray
  cluster (``RAY_ADDRESS`` or ``executor.options.address``; a local Ray is started when neither
  is set). The run blocks until the last job ends, so the report is written as for local runs;
- ``slurm``: SlurmPipelineExecutor; every job becomes an sbatch array chained to the previous one
  with ``--dependency=afterok:<id>``, all submitted at once. The command returns after submitting;
  the report is written by ``loki filter report`` (same config) once the last job has ended.

Every job keeps datatrove's completion markers in its own logging folder, so a rerun on any
executor skips finished tasks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

from loki.errors import LokiError

SLURM_DEFAULTS = {"time": "4:00:00", "partition": "cpu"}



@dataclass
class ExecutorConfig:
    """Which datatrove executor runs each job's tasks, and how many tasks.

    The ``executor`` block of ``loki filter`` and ``loki distill``: the only block that changes
    between laptop and cluster.
    """

    kind: Literal["local", "slurm", "ray"] = "local"
    """Where the tasks run: local (processes on this machine), slurm or ray."""
    tasks: int = 1
    """Shards per sharded stage (global stages always run as one task)."""
    workers: int = 1
    """Local processes running at once (1 = in-process, no spawn)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for the executor (slurm: partition, time, cpus_per_task, ...)."""

    def __post_init__(self) -> None:
        if self.kind not in ("local", "slurm", "ray"):
            raise LokiError(f"executor.kind must be local, slurm or ray, not {self.kind!r}")
        if self.tasks < 1 or self.workers < 1:
            raise LokiError("executor.tasks and executor.workers must be >= 1")


def make_executor(ex: Any, pipeline: list, tasks: int, logging_dir: str, depends=None,
                  job_name: str = "loki", slurm_defaults: dict | None = None):
    """The datatrove executor of ``ex.kind`` (``ex``: an :class:`ExecutorConfig`)."""
    options = {k: v for k, v in dict(ex.options).items() if k != "address"}
    if ex.kind == "local":
        from datatrove.executor import LocalPipelineExecutor

        return LocalPipelineExecutor(pipeline, tasks=tasks, workers=min(ex.workers, tasks),
                                     logging_dir=logging_dir, start_method="spawn")
    if ex.kind == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        opts = {**SLURM_DEFAULTS, **(slurm_defaults or {}), "job_name": job_name, **options}
        return SlurmPipelineExecutor(pipeline, tasks=tasks, logging_dir=logging_dir,
                                     depends=depends, **opts)
    from datatrove.executor import RayPipelineExecutor

    ensure_ray(ex)
    return RayPipelineExecutor(pipeline, tasks=tasks, logging_dir=logging_dir, **options)


# Every Ray worker of a loki job runs this at start (``runtime_env`` below). datatrove runs a job's
# ranks in a ``multiprocess`` pool inside a Ray actor, and the default start method forks that
# actor, which has gRPC and logging threads and Ray's own signal handlers. Once in CI a job never
# returned although both its ranks had written their output and completion markers: the pool hung
# at shutdown, as a child does when it copies a lock another thread held at the fork. A fork
# server is a clean single-threaded process (one per actor, datatrove preloaded) that forks the
# ranks instead. It costs start-up time: the Ray test's demo filter took 77 s against 44 s.
RAY_RUNTIME_ENV = {"worker_process_setup_hook": "loki.executors.pools_from_a_fork_server"}


def pools_from_a_fork_server() -> None:
    import multiprocess

    multiprocess.set_forkserver_preload(["datatrove.executor.base"])
    multiprocess.set_start_method("forkserver", force=True)


def ensure_ray(ex: Any) -> None:
    """Connects to the configured Ray cluster once per process (datatrove expects ray.init)."""
    from loki._optional import require

    ray = require("ray", "ray")
    if not ray.is_initialized():
        address = dict(ex.options).get("address") or os.environ.get("RAY_ADDRESS")
        ray.init(address=address, log_to_driver=False, runtime_env=RAY_RUNTIME_ENV)


def submit_chain(ex: Any, jobs: list[tuple[str, list, int, str]],
                 slurm_defaults: dict | None = None) -> list:
    """Slurm: (name, pipeline, tasks, logging_dir) jobs chained with afterok, submitted at once."""
    last = None
    executors = []
    for name, pipeline, tasks, logging_dir in jobs:
        last = make_executor(ex, pipeline, tasks, logging_dir, depends=last, job_name=name,
                             slurm_defaults=slurm_defaults)
        executors.append(last)
    if last is not None:
        last.run()  # launches its dependencies first, each with the previous job's id
    return executors
