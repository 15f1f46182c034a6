"""How ``loki fit`` and ``loki validate`` treat the run folder: a refused or failed command
changes nothing in it, a fresh fit does not mix with the run already there, a resume sets the
rows it replaces aside, and an evaluation of a checkpoint logs beside the run, not into it.

Each command runs as a user runs it (``loki.cli.main``) on a copy of a real run folder.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from loki.cli import main
from loki.metrics_csv import read_metrics, read_rows
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


def _eval_done(run: Path) -> None:
    """The one-shot suite already ran for this run (its record in the run folder)."""
    write_run(run, extra_callbacks=EVAL.format(out=run / "run" / "eval"))
    (run / "run" / "eval").mkdir(parents=True)
    (run / "run" / "eval" / "EVAL_DONE.json").write_text(json.dumps({"time": "earlier"}))


def _with_wandb(run: Path, monkeypatch, tmp_path: Path) -> None:
    """An offline wandb logger beside the CSV one: a run refused in fit would start a wandb run
    in the run folder."""
    wandb = pytest.importorskip("wandb")
    if wandb.run is not None:  # one left by an earlier test would be reused, not started
        wandb.finish()
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.setenv("WANDB_MODE", "offline")
    text = (run / "run.yaml").read_text()
    (run / "run.yaml").write_text(text.replace("  callbacks:\n", f"""\
    - class_path: lightning.pytorch.loggers.WandbLogger
      init_args: {{save_dir: "{run}/run", project: test, offline: true}}
  callbacks:
""", 1))


# ----------------------------------------------------------------- refused: nothing changes
@pytest.mark.parametrize("case", ["eval done", "mixture", "block size", "batch", "cache",
                                  "fails at train start"])
def test_refused_resume_changes_nothing(capsys, run, case, monkeypatch, tmp_path):
    args = ["--ckpt_path", str(run / "run" / "checkpoints" / "step=3.ckpt")]
    if case == "eval done":
        _eval_done(run)
    elif case == "cache":
        write_run(run, extra_callbacks=DISTILL.format(cache=run / "no-cache"))
    if case == "fails at train start":  # inside fit: the loggers have started (wandb too)
        args += ["--trainer.callbacks+=tests.helpers.fit_run.FailAtTrainStart"]
    else:  # refused before any logger starts
        _with_wandb(run, monkeypatch, tmp_path)
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
    assert snapshot(run) == before  # metrics.csv (all rows), hparams.yaml, config.yaml, no wandb


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
    # the replaced steps' checkpoints are set aside too: last.ckpt is the new branch's, and a
    # resume from it (what the fresh-fit refusal advises) continues the new branch
    ckpts = run / "run" / "checkpoints"
    assert sorted(p.name.split(".replaced-")[0] for p in ckpts.glob("*.replaced-*")) == [
        "last.ckpt", "step=6.ckpt"]
    assert not list(ckpts.glob("*-v1*"))
    last = torch.load(ckpts / "last.ckpt", weights_only=False, map_location="cpu")
    steps = [torch.load(p, weights_only=False, map_location="cpu")["global_step"]
             for p in ckpts.glob("step=*.ckpt")]
    assert last["global_step"] == max(steps) > 3


def test_ckpt_path_last_resumes_the_newest_checkpoint_or_starts_a_new_run(run, capfd):
    """``--ckpt_path last``, what a requeued cluster job passes: the newest checkpoint (step 6 of
    the base run) is resumed as if named, metrics.csv continues it; with no checkpoint in the
    run's folders it is a new run, not a refusal."""
    csv = run / "run" / "csv"
    _, rows = read_rows(str(csv / "metrics.csv"))
    capfd.readouterr()
    _fit(run, "--trainer.max_steps", "8", "--ckpt_path", "last")
    assert capfd.readouterr().out.splitlines()[0].endswith("; from step 6")
    now = read_rows(str(csv / "metrics.csv"))[1]
    assert now[:len(rows)] == rows and {r["step"] for r in now[len(rows):]} == {"7"}  # one history
    assert not list(csv.glob("metrics.replaced-*.csv"))  # nothing was redone
    (run / "run" / "checkpoints").rename(run / "old-checkpoints")
    (run / "run" / "csv").rename(run / "old-csv")
    _fit(run, "--trainer.max_steps", "2", "--ckpt_path", "last")
    assert capfd.readouterr().out.splitlines()[0].endswith("; a new run")
    assert [r["step"] for r in read_rows(str(csv / "metrics.csv"))[1]] == ["1"]


def test_ckpt_path_last_skips_an_incomplete_checkpoint(run, capfd):
    """A save cut short (here a truncated step=9.ckpt, newer than the run's step 6) is not what
    a requeued job resumes from: it says so, resumes the newest complete one and sets the
    incomplete one aside with the steps it replaces."""
    ckpts = run / "run" / "checkpoints"
    (ckpts / "step=9.ckpt").write_bytes((ckpts / "step=6.ckpt").read_bytes()[:4096])
    capfd.readouterr()
    _fit(run, "--trainer.max_steps", "8", "--ckpt_path", "last")
    out = capfd.readouterr().out
    assert f"--ckpt_path last: {ckpts / 'step=9.ckpt'} is incomplete" in out
    assert [line for line in out.splitlines() if "; from step 6" in line]
    assert not (ckpts / "step=9.ckpt").exists()
    assert [p.name for p in ckpts.glob("step=9.ckpt.replaced-*")]


def test_a_cut_short_save_is_removed_with_a_line(run, capfd):
    """What a killed save left (a staged distributed checkpoint folder) goes at the next start,
    said on the console after the first line; the complete checkpoints stay."""
    ckpts = run / "run" / "checkpoints"
    staged = ckpts / ".loki-tmp-new-last.ckpt.part"
    staged.mkdir()
    (staged / "__0_0.distcp").write_bytes(b"half a shard")
    capfd.readouterr()
    _fit(run, "--trainer.max_steps", "7", "--ckpt_path", "last")
    lines = capfd.readouterr().out.splitlines()
    assert lines[0].endswith("; from step 6")
    assert f"{ckpts}: removed .loki-tmp-new-last.ckpt.part, left by a checkpoint save" in lines[1]
    assert not staged.exists() and (ckpts / "step=6.ckpt").is_file()


# ----------------------------------------------------------------- a fresh fit into a run
def test_fresh_fit_into_a_run_is_refused(capsys, run):
    before = snapshot(run)
    err = _fails(capsys, run)
    folder = run / "run" / "checkpoints"
    assert f"{folder} already holds the checkpoints of a run" in err
    assert f"--ckpt_path {folder / 'last.ckpt'}" in err
    assert "ResumableCSVLogger save_dir" in err and "ModelCheckpoint dirpath" in err
    assert snapshot(run) == before


def test_fresh_fit_into_a_finished_run_does_not_advise_a_resume(capsys, run):
    """A run whose one-shot suite ran would refuse the resume too: the advice is elsewhere."""
    _eval_done(run)
    err = _fails(capsys, run)
    assert (f"that run is finished (its one-shot benchmark suite ran into {run / 'run' / 'eval'})"
            ", so start the new run in another folder (move ") in err
    assert "resume it" not in err


def test_fresh_fit_in_an_empty_folder_sets_an_old_history_aside(run):
    before = (run / "run" / "csv" / "metrics.csv").read_bytes()
    (run / "run" / "checkpoints").rename(run / "old-checkpoints")
    _fit(run, "--trainer.max_steps", "2")
    aside = list((run / "run" / "csv").glob("metrics.replaced-*.csv"))
    assert len(aside) == 1 and aside[0].read_bytes() == before
    assert [r["step"] for r in read_rows(str(run / "run" / "csv" / "metrics.csv"))[1]] == ["1"]


# ----------------------------------------------------------------- --ckpt_path that cannot resume
def test_weights_only_checkpoint_refused(capsys, run):
    ckpts = run / "run" / "checkpoints"
    ckpt = torch.load(ckpts / "step=3.ckpt", weights_only=False)
    for key in ("optimizer_states", "lr_schedulers", "callbacks"):
        ckpt.pop(key, None)
    torch.save(ckpt, ckpts / "step-0.ckpt")
    before = snapshot(run)
    err = _fails(capsys, run, "--ckpt_path", str(ckpts / "step-0.ckpt"))
    assert "holds the model's weights only" in err and "loki compare" in err
    assert "resume from a full checkpoint such as" in err
    assert snapshot(run) == before


def test_folder_of_checkpoints_refused(capsys, run):
    ckpts = run / "run" / "checkpoints"
    before = snapshot(run)
    err = _fails(capsys, run, "--ckpt_path", str(ckpts))
    assert f"--ckpt_path {ckpts} is a folder, not a checkpoint" in err
    assert "last.ckpt, step=3.ckpt, step=6.ckpt" in err
    assert snapshot(run) == before


# ----------------------------------------------------------------- validate beside the run
def test_validate_logs_beside_the_training_history(run, capfd):
    csv = run / "run" / "csv"
    before = {name: (csv / name).read_bytes() for name in ("metrics.csv", "config.yaml",
                                                            "hparams.yaml")}
    ckpt_path = run / "run" / "checkpoints" / "step=3.ckpt"
    main(["validate", "--config", str(run / "run.yaml"), "--ckpt_path", str(ckpt_path)])
    assert {name: (csv / name).read_bytes() for name in before} == before
    (own,) = csv.glob("validate-*")
    said = capfd.readouterr().out  # one line of results; Lightning's table is in the log
    assert re.search(rf"^validate {ckpt_path}: val/loss \d+\.\d{{4}}, val/ppl \d+\.\d{{4}}; "
                     rf"logged in {own}$", said, re.M), said
    assert "Validate metric" not in said
    rows = read_metrics(str(own / "metrics.csv"))
    ckpt = torch.load(run / "run" / "checkpoints" / "step=3.ckpt", weights_only=False)
    stepped = ckpt["loops"]["fit_loop"]["epoch_loop.state_dict"]["_batches_that_stepped"]
    assert [r["step"] for r in rows if "val/loss" in r] == [stepped]
    assert (own / "config.yaml").is_file()
    from loki.report import ReportConfig, resolve_paths  # the report still reads the training

    assert resolve_paths(ReportConfig(run_dir=str(run / "run")))["metrics_csv"] == str(
        csv / "metrics.csv")


def test_validate_logs_to_a_wandb_run_of_its_own(run, monkeypatch, tmp_path):
    """Not a second run that looks like the training run on the dashboard: named and typed for
    what it is, at the checkpoint's step."""
    import wandb

    _with_wandb(run, monkeypatch, tmp_path)
    started = []
    real = wandb.init
    monkeypatch.setattr(wandb, "init", lambda **kw: started.append(kw) or real(**kw))
    ckpt_path = run / "run" / "checkpoints" / "step=3.ckpt"
    main(["validate", "--config", str(run / "run.yaml"), "--ckpt_path", str(ckpt_path)])
    wandb.finish()
    stepped = torch.load(ckpt_path, weights_only=False)["loops"]["fit_loop"][
        "epoch_loop.state_dict"]["_batches_that_stepped"]
    (init,) = started
    assert init["job_type"] == "validate" and init["id"] is None
    assert init["name"] == f"loki-validate-step{stepped}"


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


def test_a_resume_says_which_model_settings_the_checkpoint_replaces(capfd, run):
    """Lightning takes a resumed model's settings from the checkpoint, whatever the config or
    command line says: the console names each one it replaced."""
    _fit(run, "--ckpt_path", str(run / "run" / "checkpoints" / "last.ckpt"),
         "--model.grad_clip", "0.5", "--trainer.max_steps", "7")
    out = capfd.readouterr().out
    assert "the model settings saved in the checkpoint replace the config's: grad_clip 0.5 -> 1.0" \
        in out, out


def test_ctrl_c_names_the_newest_checkpoint_and_the_command_that_resumes(capfd, run):
    capfd.readouterr()
    with pytest.raises(SystemExit) as info:  # Lightning's own graceful shutdown exits with 1
        _fit(run, "--ckpt_path", str(run / "run" / "checkpoints" / "last.ckpt"),
             "--trainer.max_steps", "12", "--trainer.callbacks+=tests.helpers.fit_run.CtrlCAtStep8")
    assert info.value.code == 1
    out = capfd.readouterr().out.strip().splitlines()[-1]
    last = run / "run" / "checkpoints" / "last.ckpt"
    assert out.startswith(f"interrupted at step 8; its newest checkpoint is {last} (step 6). "
                          "Resume with: loki fit --config "), out
    command = out.split("Resume with: ")[1].split()
    assert command[-2:] == ["--ckpt_path", str(last)] and command.count("--ckpt_path") == 1
    # the command as printed, without the test's Ctrl-C, runs the rest of the run
    main([a for a in command[1:] if "CtrlCAtStep8" not in a])
    assert f"fit done at step 12; newest checkpoint {last}\n" in capfd.readouterr().out
    assert torch.load(last, weights_only=False, map_location="cpu")["global_step"] == 12
    # `run` is a copy of the run folder: Lightning restores no last-file name for a moved
    # folder, and would have saved the resumed branch as last-v1.ckpt beside the stale last.ckpt
    assert not list(last.parent.glob("*-v1*"))


def test_a_resume_after_a_rollback_keeps_the_discarded_steps(tmp_path):
    """A rollback put the step axis back to 9: rows 10-12, the rollback row and the replayed 9-11
    follow. A resume at 11 redoes only the replayed 11; the discarded steps are history."""
    from loki.metrics_log import ResumableCSVLogger

    csv = tmp_path / "csv"
    csv.mkdir()
    lines = [f"{s},{1.0 / (s + 1)}," for s in range(13)] + ["12,,1"]
    lines += ["9,0.1,", "10,0.09,", "11,0.08,"]
    (csv / "metrics.csv").write_text("step,train/loss,rollback/count\n" + "\n".join(lines) + "\n")
    logger = ResumableCSVLogger(str(tmp_path), name="csv", version="")
    logger.resume_at(11)
    logger.log_metrics({"train/loss": 0.07}, step=11)
    logger.save()
    _, rows = read_rows(csv / "metrics.csv")
    steps = [int(r["step"]) for r in rows]
    assert steps == [*range(13), 12, 9, 10, 11]
    assert rows[-1]["train/loss"] == "0.07" and rows[13]["rollback/count"] == "1"
    (aside,) = csv.glob("metrics.replaced-*.csv")
    _, redone = read_rows(aside)
    assert [(r["step"], r["train/loss"]) for r in redone] == [("11", "0.08")]


def test_a_resumed_fit_continues_the_checkpoints_wandb_run(tmp_path, monkeypatch):
    """One wandb run per training run: the id is in every checkpoint, and a resume (here the
    requeue's --ckpt_path last) logs to the same run instead of starting another."""
    import wandb

    run = tmp_path / "r"
    write_run(run, max_steps=4, extra_callbacks="    - class_path: "
              "callbacks.wandb_dashboard.WandbDashboard\n")
    _with_wandb(run, monkeypatch, tmp_path)
    _fit(run)
    wandb.finish()  # a resume is a new process; here the same one, so end the first run
    (first,) = (run / "run" / "wandb").glob("offline-run-*")

    def id_of(folder: Path) -> str:  # offline-run-<date>_<time>-<id>, then -1 when a second run
        return folder.name.split("-")[3]  # of the id starts within the same second

    run_id = id_of(first)
    last = torch.load(run / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["callbacks"]["WandbDashboard"] == {"run_ids": [run_id]}
    _fit(run, "--trainer.max_steps", "6", "--ckpt_path", "last")
    wandb.finish()
    assert [id_of(p) for p in (run / "run" / "wandb").glob("offline-run-*")] == [run_id, run_id]
