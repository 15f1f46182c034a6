"""``ClusterSignals``: SLURM's requeue signal acted on at a shared step boundary (checkpoint,
``scontrol requeue``, exit 0, then ``--ckpt_path last`` resumes), and Lightning's per-step SIGTERM
broadcast kept to check steps."""

from __future__ import annotations

import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from callbacks.cluster_signals import ClusterSignals, slurm_job_id
from loki.cli import main
from loki.errors import LokiError
from tests.helpers.fit_run import write_run

CALLBACKS = """\
    - class_path: callbacks.cluster_signals.ClusterSignals
    - class_path: tests.helpers.fit_run.RequeueSignalAtStep5
"""


def test_arguments_are_checked():
    with pytest.raises(LokiError, match="'SIGFOO' is not a signal name"):
        ClusterSignals("SIGFOO")
    with pytest.raises(LokiError, match="check_every_n_steps must be >= 1, got 0"):
        ClusterSignals(check_every_n_steps=0)


def test_the_job_id_scontrol_takes(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    assert slurm_job_id() == "4242"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "4240")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    assert slurm_job_id() == "4240_2"


def test_the_sigterm_broadcast_runs_on_check_steps_only(monkeypatch):
    """Lightning calls the broadcast at the start of every step of a multi-process run; it reads
    the flag back from the GPU each time."""
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    calls = []
    loop = SimpleNamespace(_broadcast_sigterm_tensor=lambda: calls.append(trainer.global_step))
    trainer = SimpleNamespace(global_step=0, log_every_n_steps=10, checkpoint_callback=None,
                              fit_loop=SimpleNamespace(epoch_loop=loop))
    cb = ClusterSignals()
    cb.on_train_start(trainer, None)
    cb.on_train_start(trainer, None)  # a second fit with the same trainer: not wrapped twice
    for step in range(31):
        trainer.global_step = step
        loop._broadcast_sigterm_tensor()
    assert calls == [0, 10, 20, 30]


@pytest.fixture
def slurm(tmp_path, monkeypatch):
    """A SLURM job: its id, and an `scontrol` that records what it is asked (and can fail)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "scontrol.log"
    (bin_dir / "scontrol").write_text(
        f'#!/bin/sh\necho "$@" >> {log}\n'
        '[ -z "$SCONTROL_FAILS" ] || { echo "$SCONTROL_FAILS" >&2; exit 1; }\n')
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    before = signal.getsignal(signal.SIGUSR1)
    yield log
    assert signal.getsignal(signal.SIGUSR1) == before  # the handler is put back


def test_requeue_saves_at_the_next_check_step_and_the_requeued_job_resumes(tmp_path, slurm,
                                                                           capfd):
    run = write_run(tmp_path, extra_callbacks=CALLBACKS)  # log_every_n_steps: 2, max_steps: 12
    capfd.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(["fit", "--config", str(run)])
    assert exited.value.code == 0
    saved = tmp_path / "run" / "checkpoints" / "requeue-step=6.ckpt"
    assert saved.is_file()
    assert slurm.read_text() == "requeue 4242\n"
    out = capfd.readouterr().out
    assert (f"SLURM's time limit is near (SIGUSR1): saved {saved} at step 6; job 4242 is "
            "requeued and resumes from it (--ckpt_path last)") in out
    assert "fit done" not in out
    # the requeued job (the sbatch script adds --ckpt_path last) takes up that checkpoint
    write_run(tmp_path, extra_callbacks=CALLBACKS.splitlines(keepends=True)[0])  # no signal
    main(["fit", "--config", str(run), "--ckpt_path", "last"])
    out = capfd.readouterr().out.splitlines()
    assert out[0].endswith("; from step 6") and out[-2].startswith("fit done at step 12")


def test_a_failed_requeue_names_the_checkpoint_to_resume_from(tmp_path, slurm, capsys,
                                                              monkeypatch):
    monkeypatch.setenv("SCONTROL_FAILS", "scontrol: error: Invalid job id specified")
    run = write_run(tmp_path, extra_callbacks=CALLBACKS)
    with pytest.raises(SystemExit) as exited:
        main(["fit", "--config", str(run)])
    assert exited.value.code == 2
    saved = Path(tmp_path / "run" / "checkpoints" / "requeue-step=6.ckpt")
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"loki fit: error: SLURM's SIGUSR1 came before the time limit: saved {saved} at step 6, "
        "but `scontrol requeue 4242` failed (scontrol: error: Invalid job id specified); resume "
        f"with --ckpt_path {saved}")


def test_without_a_checkpoint_folder_nothing_could_resume(tmp_path, slurm, capsys):
    """A requeue needs the run's ModelCheckpoint folder: to save into, and for --ckpt_path last
    to find the checkpoint in (Lightning resolves a folder left unset only once training runs)."""
    import yaml

    config = yaml.safe_load(write_run(tmp_path, extra_callbacks=CALLBACKS.splitlines(
        keepends=True)[0]).read_text())
    callbacks = config["trainer"]["callbacks"]

    def refused(trainer: dict, *args: str) -> str:
        (tmp_path / "changed.yaml").write_text(yaml.safe_dump({**config, "trainer": trainer}))
        with pytest.raises(SystemExit) as exited:
            main(["fit", "--config", str(tmp_path / "changed.yaml"), *args])
        assert exited.value.code == 2
        return capsys.readouterr().err

    assert "ClusterSignals saves the requeued job's checkpoint where a ModelCheckpoint" in refused(
        {**config["trainer"], "enable_checkpointing": False, "callbacks": callbacks[1:]})
    del callbacks[0]["init_args"]["dirpath"]
    assert "--ckpt_path last looks for the run's checkpoints in its ModelCheckpoint folders" in \
        refused(config["trainer"], "--ckpt_path", "last")


# ----------------------------------------------------------------- Ctrl-C
def _interrupted_fit(tmp_path, presses: int) -> tuple[Path, str, int]:
    run = write_run(tmp_path, extra_callbacks=CALLBACKS.splitlines(keepends=True)[0] + (
        "    - class_path: tests.helpers.fit_run.SigintAtStep5\n"
        f"      init_args: {{presses: {presses}}}\n"))  # log_every_n_steps: 2, max_steps: 12
    with pytest.raises(SystemExit) as exited:  # Lightning's Ctrl-C shutdown exits with 1
        main(["fit", "--config", str(run)])
    return run, str(exited.value.code), signal.getsignal(signal.SIGINT)


def test_ctrl_c_saves_at_the_next_check_step_and_names_the_resume(tmp_path, capfd,
                                                                  monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)  # a terminal, not a cluster job
    capfd.readouterr()
    run, code, handler = _interrupted_fit(tmp_path, presses=1)
    assert code == "1" and handler is signal.default_int_handler  # put back
    saved = tmp_path / "run" / "checkpoints" / "interrupted-step=6.ckpt"
    assert torch.load(saved, weights_only=False)["global_step"] == 6
    out = capfd.readouterr().out
    assert ("Ctrl-C: the run stops after step 6, once its checkpoint is saved; press Ctrl-C "
            "again to stop now without one") in out
    last = out.strip().splitlines()[-1]
    assert last.startswith(f"interrupted at step 6; its newest checkpoint is {saved} (step 6). "
                           "Resume with: loki fit --config "), last
    # the command as printed (without the test's Ctrl-C) runs the rest; so does the requeue's
    write_run(tmp_path, extra_callbacks=CALLBACKS.splitlines(keepends=True)[0])
    main(["fit", "--config", str(run), "--ckpt_path", "last"])
    out = capfd.readouterr().out.splitlines()
    assert out[0].endswith("; from step 6") and out[-2].startswith("fit done at step 12")


def test_a_second_ctrl_c_stops_at_once(tmp_path, capfd, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    capfd.readouterr()
    _, code, handler = _interrupted_fit(tmp_path, presses=2)
    assert code == "1" and handler is signal.default_int_handler
    assert not list((tmp_path / "run" / "checkpoints").glob("interrupted-*"))
    assert "interrupted at step 5; its newest checkpoint is" in capfd.readouterr().out


@pytest.mark.slow
def test_a_terminals_ctrl_c_reaches_every_process_and_the_run_still_saves(tmp_path):
    """A terminal sends SIGINT to the whole process group: both FSDP2 ranks of `loki fit`
    (Lightning starts rank 1) and their loader workers. The workers ignore it (before, one ended
    by it ended the loader: "DataLoader worker exited unexpectedly", and nothing was saved); the
    ranks agree at the next check step, save interrupted-step=<N>.ckpt and stop."""
    import os
    import subprocess
    import sys
    import time

    from tests.helpers.fit_run import launch_env

    root = Path(__file__).resolve().parents[2]
    run = write_run(tmp_path, max_steps=400, extra_callbacks=CALLBACKS.splitlines(
        keepends=True)[0])
    env = launch_env(PYTHONPATH=str(root), OMP_NUM_THREADS="1", TORCHDYNAMO_DISABLE="1")
    env.pop("SLURM_JOB_ID", None)
    cmd = [sys.executable, str(root / "tests" / "helpers" / "loki_entry.py"), "fit", "--config",
           str(run), "--data.num_workers", "1", "--trainer.devices", "2",
           "--trainer.strategy=lightning.pytorch.strategies.ModelParallelStrategy",
           "--trainer.strategy.data_parallel_size=2", "--trainer.strategy.tensor_parallel_size=1"]
    log = tmp_path / "fit.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    checkpoints = tmp_path / "run" / "checkpoints"
    deadline = time.time() + 300
    while not (checkpoints / "step=3.ckpt").exists():  # training is under way
        assert proc.poll() is None and time.time() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    try:
        assert proc.wait(timeout=300) == 1, log.read_text()[-3000:]  # Lightning's Ctrl-C exit
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    (saved,) = checkpoints.glob("interrupted-step=*.ckpt")
    text = log.read_text()
    assert "exited unexpectedly" not in text and "Ctrl-C: the run stops after step" in text
    assert f"its newest checkpoint is run/checkpoints/{saved.name}" in text
    assert (saved / ".metadata").is_file() and (saved / "meta.pt").is_file()  # both ranks' save
