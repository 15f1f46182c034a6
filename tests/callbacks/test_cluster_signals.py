"""``ClusterSignals``: SLURM's requeue signal acted on at a shared step boundary (checkpoint,
``scontrol requeue``, exit 0, then ``--ckpt_path last`` resumes), and Lightning's per-step SIGTERM
broadcast kept to check steps."""

from __future__ import annotations

import signal
from pathlib import Path
from types import SimpleNamespace

import pytest

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
    trainer = SimpleNamespace(global_step=0, log_every_n_steps=10,
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
