"""How ``loki fit`` and ``loki validate`` treat the run folder: a refused or failed command
changes nothing in it, a fresh fit does not mix with the run already there, a resume sets the
rows it replaces aside, and an evaluation of a checkpoint logs beside the run, not into it.

Each command runs as a user runs it (``loki.cli.main``) on a copy of a real run folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from loki.metrics_csv import read_rows
from tests.helpers.fit_run import snapshot, write_run
from tests.test_lightning_cli import _fails, _fit

EVAL = """\
    - class_path: callbacks.benchmark_eval.OneShotBenchmarkEval
      init_args: {{output_dir: "{out}", suite: {{preset: demo, offline: true}}}}
"""
DISTILL = """\
    - class_path: callbacks.distillation.TeacherDistillation
      init_args: {{cache: "{cache}"}}
"""


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """6 steps of a tiny run, checkpoints at steps 3 and 6."""
    folder = tmp_path_factory.mktemp("base")
    write_run(folder)
    _fit(folder, "--trainer.max_steps", "6")
    return folder


@pytest.fixture
def run(base_run, tmp_path) -> Path:
    folder = tmp_path / "copy"
    shutil.copytree(base_run, folder)
    write_run(folder)
    return folder


def _eval_done(run: Path) -> None:
    """The one-shot suite already ran for this run (its record in the run folder)."""
    write_run(run, extra_callbacks=EVAL.format(out=run / "run" / "eval"))
    (run / "run" / "eval").mkdir(parents=True)
    (run / "run" / "eval" / "EVAL_DONE.json").write_text(json.dumps({"time": "earlier"}))


# ----------------------------------------------------------------- refused: nothing changes
@pytest.mark.parametrize("case", ["fails at train start"])
def test_refused_resume_changes_nothing(capsys, run, case):
    args = ["--ckpt_path", str(run / "run" / "checkpoints" / "step=3.ckpt")]
    if case == "eval done":
        _eval_done(run)
    elif case == "cache":
        write_run(run, extra_callbacks=DISTILL.format(cache=run / "no-cache"))
    elif case == "fails at train start":
        args += ["--trainer.callbacks+=tests.helpers.fit_run.FailAtTrainStart"]
    args += {"mixture": ["--data.mixture", "{web: 1.0, synthetc: 0.5}"],
             "block size": ["--data.block_size", "100000"],
             "batch": ["--data.batch_size.start", "3"]}.get(case, [])
    before = snapshot(run)
    err = _fails(capsys, run, *args)
    assert {"eval done": "the benchmark suite already ran for",
            "mixture": "mixture names unknown sources ['synthetc']",
            "block size": "has no training sequence of 100001 tokens",
            "batch": "global batch 3 is not a multiple of micro_batch_size 2",
            "cache": "no distillation cache at",
            "fails at train start": "stopped at train start"}[case] in err
    assert snapshot(run) == before  # metrics.csv (all rows), hparams.yaml, config.yaml


def test_failed_fresh_fit_leaves_the_earlier_history(capsys, run):
    (run / "run" / "checkpoints").rename(run / "old-checkpoints")
    before = snapshot(run)
    _fails(capsys, run, "--trainer.callbacks+=tests.helpers.fit_run.FailAtTrainStart")
    assert snapshot(run) == before


def test_accepted_resume_sets_the_replaced_rows_aside(run):
    csv = run / "run" / "csv"
    _, rows = read_rows(str(csv / "metrics.csv"))
    _fit(run, "--ckpt_path", str(run / "run" / "checkpoints" / "step=3.ckpt"))
    aside = list(csv.glob("metrics.replaced-*.csv"))
    assert len(aside) == 1
    replaced = read_rows(str(aside[0]))[1]
    assert replaced == [r for r in rows if float(r["step"]) >= 3] and replaced
    now = read_rows(str(csv / "metrics.csv"))[1]
    assert now[: len(rows) - len(replaced)] == [r for r in rows if float(r["step"]) < 3]


def test_logger_changes_nothing_until_its_first_row(tmp_path):
    from loki.metrics_log import NEW_RUN, ResumableCSVLogger

    csv = tmp_path / "csv"
    csv.mkdir()
    (csv / "metrics.csv").write_text("step,train/loss\n0,1.0\n1,0.5\n")
    (csv / "hparams.yaml").write_text("earlier: run\n")
    before = snapshot(tmp_path)
    for status in ("failed", "success"):
        logger = ResumableCSVLogger(str(tmp_path), name="csv", version="")
        logger.resume_at(NEW_RUN)
        logger.log_hyperparams({"lr": 0.1})
        logger.save()
        logger.finalize(status)
        if status == "failed":  # refused or failed before a row: as it was
            assert snapshot(tmp_path) == before
    assert (csv / "hparams.yaml").read_text() == "lr: 0.1\n"  # a run that ended well
    assert len(list(csv.glob("metrics.replaced-*.csv"))) == 1
