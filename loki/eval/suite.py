"""Run a preset with lm-eval once and write ``results.json`` + ``results.md``.

The paper ran its benchmark suite once, on the chosen checkpoint, so as not to tune on the
benchmarks. ``run_suite`` keeps that promise per output folder: a marker (``EVAL_DONE``) records
the run, and a second run into the same folder is refused unless ``force`` is given with a reason;
both land in the results. The training callback adds the same record to the checkpoint.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loki import atomic
from loki._optional import require
from loki.errors import LokiError
from loki.eval.presets import preset_rows
from loki.eval.table import render_markdown, summarize

log = logging.getLogger(__name__)
MARKER = "EVAL_DONE.json"
# Where a preset's local task data lies when ``data_dir`` is not set: the demo's tasks are
# written by ``loki demo`` (its tasks stage), the benchmarks by ``loki eval prepare-data``.
PRESET_DATA_DIRS = {"demo": "data/demo/tasks"}
DEFAULT_DATA_DIR = "data/eval"


@dataclass
class SuiteConfig:
    """What to evaluate and how (the eval block of loki eval and of the benchmark callback)."""

    preset: str = "leaderboard"
    """Benchmark set: leaderboard (Open LLM Leaderboard v1 shots), paper (Table 1 shots) or demo
    (the small local tasks made from held-out demo text)."""
    tasks: list[str] = field(default_factory=list)
    """Only these rows of the preset (task names or labels); empty = all."""
    offline: bool = False
    """Use the packaged local-data task variants instead of downloading from the hub."""
    data_dir: str | None = None
    """Root of the local task data, <data_dir>/<dataset>/<split>.jsonl; null: the preset's,
    data/demo/tasks for demo (written by loki demo), data/eval for the others (written by loki
    eval prepare-data)."""
    num_fewshot: int | None = None
    """Override every row's shot count (null: the preset's)."""
    limit: int | None = None
    """Score only the first N items per task (smoke runs; results are marked)."""
    bootstrap_iters: int = 1000
    """lm-eval's bootstrap resamples for the stderr of non-mean metrics."""
    seed: int = 1234
    """Seed for few-shot sampling and generation."""

    def __post_init__(self) -> None:
        if self.data_dir is None:
            self.data_dir = PRESET_DATA_DIRS.get(self.preset, DEFAULT_DATA_DIR)


def already_ran(out_dir: str | Path) -> dict | None:
    marker = Path(out_dir) / MARKER
    return json.loads(marker.read_text()) if marker.is_file() else None


FORCE_FLAGS = "--force true --force_reason '<why>'"


def check_once(previous: dict | None, force: bool, reason: str | None, where: str,
               how: str = FORCE_FLAGS) -> None:
    """Refuse a second evaluation unless forced with a reason; ``how`` tells the caller's user
    how to force one."""
    if previous is None:
        return
    if not force:
        raise LokiError(
            f"the benchmark suite already ran for {where} (at {previous.get('time')}); it runs "
            f"once per run to avoid tuning on benchmarks. To run it again: {how}")
    if not reason:
        raise LokiError(f"a forced re-run of the benchmark suite needs a reason: {how}")


def run_suite(
    lm: Any, suite: SuiteConfig, out_dir: str | Path, *, force: bool = False,
    force_reason: str | None = None, metadata: dict | None = None,
) -> dict[str, Any]:
    """Evaluate ``lm`` (an lm-eval ``LM``) on ``suite``; write results JSON + Markdown."""
    out_dir = Path(out_dir)
    previous = already_ran(out_dir)
    check_once(previous, force, force_reason, str(out_dir))
    evaluator = require("lm_eval.evaluator", "eval")
    from loki.eval.local_tasks import task_manager

    rows = preset_rows(suite.preset, suite.offline, suite.tasks, suite.num_fewshot)
    names = [r.task for r in rows]
    tm = task_manager(names, suite.data_dir, out_dir / "tasks")
    raw: dict[str, Any] = {"results": {}, "n-samples": {}, "configs": {}, "versions": {}}
    start = time.time()
    # lm-eval takes one shot count per call: one call per distinct count
    for shots in sorted({r.num_fewshot for r in rows}):
        group = [r.task for r in rows if r.num_fewshot == shots]
        out = evaluator.simple_evaluate(
            model=lm, tasks=group, num_fewshot=shots, task_manager=tm, limit=suite.limit,
            bootstrap_iters=suite.bootstrap_iters, random_seed=suite.seed,
            numpy_random_seed=suite.seed, torch_random_seed=suite.seed,
            fewshot_random_seed=suite.seed, log_samples=False)
        for key in raw:
            raw[key].update(out.get(key, {}))
    summary = summarize(raw["results"], rows)
    summary.update(
        preset=suite.preset, suite=asdict(suite), forced=previous is not None,
        force_reason=force_reason if previous is not None else None,
        previous_run=previous, limited=suite.limit is not None, seconds=time.time() - start,
        time=time.strftime("%Y-%m-%dT%H:%M:%S"), **(metadata or {}), lm_eval=raw)
    # the marker vouches for the results: all three change together, or none does
    atomic.write_all({**_result_files(summary, out_dir), out_dir / MARKER: json.dumps(
        {"time": summary["time"], "forced": summary["forced"], "reason": force_reason,
         "preset": suite.preset, **(metadata or {})}, indent=2, default=str) + "\n"})
    return summary


def _result_files(summary: dict[str, Any], out_dir: Path) -> dict[Path, str]:
    title = "Loki" + (" (limited)" if summary.get("limited") else "")
    return {out_dir / "results.json": json.dumps(summary, indent=2, default=str) + "\n",
            out_dir / "results.md": f"# Benchmark results ({summary.get('preset')})\n\n"
                                    + render_markdown(summary, title=title)}


def write_results(summary: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """results.json and results.md, both or neither (a full disk leaves the earlier ones)."""
    files = _result_files(summary, Path(out_dir))
    atomic.write_all(files)
    js, md = files
    return js, md
