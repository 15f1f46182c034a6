"""Distillation tasks on a datatrove executor, the same way ``loki filter`` runs its stages.

``loki distill build`` (teacher candidates) and ``loki distill synthetic`` (machine-generated
text) both split their work into ``executor.tasks`` tasks, each a pure function of its rank that
writes its own output and completion marker. ``executor.kind: local`` runs them with
``executor.workers`` processes at once; ``slurm`` / ``ray`` submit them to a cluster
(``executor.options`` are passed to the executor: partition, time, cpus_per_task, gpus, ...; see
``loki/executors.py``). datatrove's completion files under ``<output>/logs`` and the tasks' own
markers make a rerun skip finished tasks. Local and Ray runs block until done and finish
themselves; on Slurm, run ``loki distill finalize`` (or ``synthetic`` again) with the same config
after the jobs end.

This module knows nothing of what a task does (no import of the builders): a task is any
picklable ``task(rank, world_size) -> {"report": {source: {counter: value}}}``.
"""

from __future__ import annotations

from collections.abc import Callable

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from loki.executors import ExecutorConfig

Task = Callable[[int, int], dict]


class DistillTask(PipelineStep):
    """One task: ``task(rank, world_size)``; its report's counters become datatrove stats."""

    type = "distill"

    def __init__(self, task: Task, name: str = "distill task") -> None:
        super().__init__()
        self.task, self.name = task, name

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1):
        info = self.task(rank, world_size)
        for source, counts in info.get("report", {}).items():
            for key, value in counts.items():
                if isinstance(value, int | float):
                    self.stat_update(f"{source}/{key}", value=value)
        yield from ()


def make_executor(ex: ExecutorConfig, pipeline: list, logging_dir: str):
    from loki.executors import make_executor as executor

    return executor(ex, pipeline, ex.tasks, logging_dir,
                    job_name="loki-distill-build",
                    slurm_defaults={"time": "12:00:00", "partition": "gpu"})


def run_tasks(ex: ExecutorConfig, task: Task, logging_dir: str, name: str = "distill task",
              ) -> bool:
    """Run (local, Ray: blocks until done) or submit (Slurm) every unfinished task; True when
    only submitted."""
    executor = make_executor(ex, [DistillTask(task, name)], logging_dir)
    if executor.get_incomplete_ranks():
        executor.run()
    return ex.kind == "slurm"
