"""The filter pipeline: each stage (``loki.filtering.stages``) is one or more datatrove executors,
run in order. Every executor has its own logging folder, so datatrove's completion markers make a
re-run skip finished tasks; an interrupted task is redone from scratch and rewrites the same files.
The markers count only while the stage's signature (``loki.filtering.signatures``: its settings and
inputs) is the one it ran with; a changed stage is cleared and redone with the stages after it.

``executor.kind`` picks LocalPipelineExecutor (default), RayPipelineExecutor (jobs in order, as
locally) or SlurmPipelineExecutor (every job submitted at once, chained with afterok
dependencies); see ``loki/executors.py``.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter

from loki._optional import require
from loki.errors import LokiError
from loki.filtering.config import FilterConfig
from loki.filtering.stages import Stage, StagePlan


class FilterPipeline:
    """Runs the stages of ``FilterConfig`` (``loki.filtering.stages``) and writes the report."""

    def __init__(self, cfg: FilterConfig):
        require("datatrove", "data")
        self.cfg = cfg
        self.work = cfg.work_dir.rstrip("/")

    def stages(self) -> list[Stage]:
        return StagePlan(self.cfg).stages()

    # -- execution -----------------------------------------------------------------------------
    def _executor(self, pipeline: list, tasks: int, logging_dir: str):
        from loki.executors import make_executor

        return make_executor(self.cfg.executor, pipeline, tasks, logging_dir)

    def logging_dir(self, stage: str, label: str) -> str:
        return f"{self.work}/logs/{stage}/{label}"

    def run(self) -> dict:
        """Runs every stage (local: in order, timed; cluster: submits the chain) and the report.
        Everything that can be wrong with the config or its files is checked before the first
        write; then the stages whose inputs or settings changed are cleared (signatures)."""
        from loki.console import say
        from loki.filtering.preflight import check_run, prebuilt_index
        from loki.filtering.signatures import invalidate, signatures, stored

        check_run(self.cfg)
        stages = self.stages()  # the inputs exist
        index_path = f"{self.work}/decontam/index.npz"
        if self.cfg.decontam.enabled:
            record = stored(self.work, "decontam_index") or {}
            same = record.get("signature") == signatures(stages)["decontam_index"]["signature"]
            index = prebuilt_index(self.cfg, same and os.path.exists(index_path))
        else:
            index = None
        redone, changed = invalidate(self.work, stages)  # the first write
        if changed:
            say(changed)
        if index is not None:  # the decontam_index job finds it built from the same config
            index.save(index_path)
        if self.cfg.executor.kind == "slurm":
            from loki.executors import submit_chain

            submit_chain(self.cfg.executor, [
                (f"loki-{stage.name}-{label}", pipeline, tasks, self.logging_dir(stage.name, label))
                for stage in stages for label, pipeline, tasks in stage.jobs])
            return {"submitted": True}
        timings_path = f"{self.work}/timings.json"
        timings = json.load(open(timings_path)) if os.path.exists(timings_path) else {}
        timings = {k: v for k, v in timings.items() if k not in redone}
        reused = []
        for stage in stages:
            ran, start = False, time.perf_counter()
            for label, pipeline, tasks in stage.jobs:
                executor = self._executor(pipeline, tasks, self.logging_dir(stage.name, label))
                if executor.get_incomplete_ranks():
                    ran = True
                    executor.run()
            if stage.name == "quality_train":
                from loki.filtering.preflight import check_quality_head

                check_quality_head(self.cfg)
            self._check_kept_documents(stage)
            if ran or stage.name not in timings:  # a reused stage keeps its first timing
                timings[stage.name] = round(time.perf_counter() - start, 3)
            if not ran:
                reused.append(stage.name)
            with open(timings_path, "w") as f:
                json.dump(timings, f, indent=1)
        return self.report(stages, timings, reused)

    def _check_kept_documents(self, stage: Stage) -> None:
        """A stage that kept no document leaves the next nothing to read: stop here, naming the
        stage, what it counted and the settings that decide what it keeps."""
        from loki.filtering.report import stage_rows

        if not stage.output:
            return
        *read, row = stage_rows(self.cfg, stage, {})
        if row.get("docs_out", 1):
            return
        counted = read[0] if read else row  # clean: what was read, with the readers' skips
        reasons = Counter(row["reasons"]) + (Counter(counted["reasons"]) if read else Counter())
        why = ", ".join(f"{k} {v}" for k, v in reasons.most_common(3))
        raise LokiError(f"{stage.name} kept 0 of {counted['docs_in']} documents"
                        + (f" ({why})" if why else "") + f": check {self._settings_of(stage)}")

    def _settings_of(self, stage: Stage) -> str:
        """The settings that decide what ``stage`` keeps, as the one-line error names them."""
        cfg = self.cfg
        return {
            "clean": f"input.paths, input.format ({cfg.input.format}), input.text_key "
                     f"({cfg.input.text_key!r}) and the clean bounds (clean.min_chars "
                     f"{cfg.clean.min_chars})",
            "semdedup": f"semdedup.eps ({cfg.semdedup.eps})",
            "quality": f"quality.threshold ({cfg.quality.threshold}) and quality.model_path",
            "factual": f"factual.strength ({cfg.factual.strength}) and factual.min_chars "
                       f"({cfg.factual.min_chars})",
            "decontam": f"decontam.max_hits ({cfg.decontam.max_hits}) and decontam.min_fragment "
                        f"({cfg.decontam.min_fragment})",
        }.get(stage.name, f"the {stage.name} settings and the stages before it")

    def report(self, stages: list[Stage] | None = None, timings: dict | None = None,
               reused: list[str] | None = None) -> dict:
        """The filter report from the jobs' stats files (``loki filter report`` after Slurm).
        A work_dir with no stats at all is a mistyped one or a run not started: an error, and
        the report already in output_dir stays."""
        from glob import glob

        from loki.filtering.report import write_report

        if not glob(f"{self.work}/logs/*/*/stats/*.json"):
            raise LokiError(f"no filter run found in work_dir {self.work} (no stage statistics "
                            "under its logs/): check --work_dir, or wait until the run's first "
                            "job has ended")
        if timings is None:
            path = f"{self.work}/timings.json"
            timings = json.load(open(path)) if os.path.exists(path) else {}
        return write_report(self.cfg, stages or self.stages(), timings, reused or [])
