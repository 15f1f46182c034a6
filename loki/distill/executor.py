"""Build tasks on a datatrove executor, the same way ``loki filter`` runs its stages.

``executor.kind: local`` runs ``executor.tasks`` tasks with ``executor.workers`` processes at
once; ``slurm`` / ``ray`` submit them to a cluster (``executor.options`` are passed to the
executor: partition, time, cpus_per_task, gpus, ...). Each task writes its shard and marker;
datatrove's completion files under ``<output>/logs`` make a rerun skip finished tasks. On a
cluster, run ``loki distill finalize --config <same yaml>`` after the jobs end to write the
manifest (``build`` does it itself for local runs).
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
    ex = cfg.executor
    if ex.kind == "local":
        from datatrove.executor import LocalPipelineExecutor

        return LocalPipelineExecutor(pipeline, tasks=ex.tasks, workers=min(ex.workers, ex.tasks),
                                     logging_dir=logging_dir, start_method="spawn")
    if ex.kind == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        opts = {"time": "12:00:00", "partition": "gpu", **ex.options}
        return SlurmPipelineExecutor(pipeline, tasks=ex.tasks, logging_dir=logging_dir, **opts)
    from datatrove.executor import RayPipelineExecutor

    return RayPipelineExecutor(pipeline, tasks=ex.tasks, logging_dir=logging_dir, **ex.options)


def run_tasks(cfg: BuildConfig) -> bool:
    """Run (local) or submit (cluster) every unfinished task; True when only submitted."""
    executor = make_executor(cfg, [DistillCandidates(cfg)], f"{cfg.output}/logs")
    if executor.get_incomplete_ranks():
        executor.run()
    return cfg.executor.kind != "local"
