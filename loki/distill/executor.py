"""Build tasks on a datatrove executor, the same way ``loki filter`` runs its stages.

``executor.kind: local`` runs ``executor.tasks`` tasks with ``executor.workers`` processes at
once; ``slurm`` / ``ray`` submit them to a cluster (``executor.options`` are passed to the
executor: partition, time, cpus_per_task, gpus, ...; see ``loki/executors.py``). Each task
writes its shard and marker; datatrove's completion files under ``<output>/logs`` make a rerun
skip finished tasks. On Slurm, run ``loki distill finalize --config <same yaml>`` after the jobs
end to write the manifest (``build`` does it itself for local and Ray runs, which block).
"""

from __future__ import annotations

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from loki.distill.build import BuildConfig, build_shard


class DistillCandidates(PipelineStep):
    """One build task: this rank's share of the prompts, every teacher, one shard."""

    name = "distill candidates"
    type = "distill"

    def __init__(self, cfg: BuildConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1):
        info = build_shard(self.cfg, rank, world_size)
        for source, counts in info.get("report", {}).items():
            for key, value in counts.items():
                self.stat_update(f"{source}/{key}", value=value)
        yield from ()


def make_executor(cfg: BuildConfig, pipeline: list, logging_dir: str):
    from loki.executors import make_executor as executor

    return executor(cfg.executor, pipeline, cfg.executor.tasks, logging_dir,
                    job_name="loki-distill-build",
                    slurm_defaults={"time": "12:00:00", "partition": "gpu"})


def run_tasks(cfg: BuildConfig) -> bool:
    """Run (local, Ray: blocks until done) or submit (Slurm) every unfinished task; True when
    only submitted."""
    executor = make_executor(cfg, [DistillCandidates(cfg)], f"{cfg.output}/logs")
    if executor.get_incomplete_ranks():
        executor.run()
    return cfg.executor.kind == "slurm"
