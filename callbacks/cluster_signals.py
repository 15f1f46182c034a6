"""``ClusterSignals``: a cluster's stop signals, acted on at step boundaries that every rank shares.

Three things Lightning does with signals do not suit a sharded run of many hours:

- **The SLURM requeue signal.** With ``#SBATCH --signal=USR1@300`` SLURM warns the job before its
  time limit. Lightning's handler saves a checkpoint inside the signal handler, wherever each
  rank happens to be in its step. Under FSDP2 a checkpoint is collective, so ranks that enter it
  at different points of the step mismatch their collectives, and the state it saves sits halfway
  through a step. Here the handler only notes the signal. At the next check step the ranks agree
  (one all-reduce), save ``requeue-step=<N>.ckpt`` into the checkpoint folder, and rank 0 runs
  ``scontrol requeue``. The process then exits with status 0, before the final evaluation. The
  requeued job passes ``--ckpt_path last`` (``experiments/slurm/loki-1.4b.sbatch``), which resumes
  from that checkpoint.
- **The SIGTERM broadcast.** In a run of more than one process, Lightning broadcasts rank 0's
  SIGTERM flag at the start of every step and reads it back: one host synchronization per step
  (Lightning-AI/pytorch-lightning#21487). Here the broadcast runs on check steps only. A SIGTERM
  is then noticed up to ``check_every_n_steps - 1`` steps later; SLURM's grace before SIGKILL is
  30 s or more.

- **Ctrl-C.** Lightning stops at once, wherever each rank is, and nothing is saved: at 1.4B the
  steps since the last periodic checkpoint (up to 2000, hours of a node) are lost. Here the first
  Ctrl-C (SIGINT) is noted, and at the next check step the ranks agree, save
  ``interrupted-step=<N>.ckpt`` and then stop as Lightning does after Ctrl-C (its shutdown, and
  ``loki fit``'s closing line with the command that resumes from that checkpoint). A second Ctrl-C
  stops at once, as without this callback. The loader's worker processes ignore SIGINT
  (``LokiDataModule``), so that the Ctrl-C a terminal sends to every process does not end the
  loader first.

Check steps are every ``check_every_n_steps`` optimizer steps, by default the trainer's
``log_every_n_steps``, when the logging reads values back anyway. Outside SLURM (no
``SLURM_JOB_ID``) the requeue signal is left to Lightning.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import lightning as L
import torch

from loki.errors import LokiError


def slurm_job_id() -> str | None:
    """The id ``scontrol requeue`` takes: ``<array job>_<task>`` in a job array, else the job's."""
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array is not None and os.environ.get("SLURM_ARRAY_TASK_ID") is not None:
        return f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


class ClusterSignals(L.Callback):
    def __init__(self, requeue_signal: str = "SIGUSR1", check_every_n_steps: int | None = None,
                 save_on_interrupt: bool = True) -> None:
        """
        Args:
            requeue_signal: the signal of ``#SBATCH --signal`` (without ``B:``: every rank
                must get it).
            check_every_n_steps: optimizer steps between checks (default: log_every_n_steps).
            save_on_interrupt: the first Ctrl-C saves a checkpoint at the next check step and
                then stops the run; False leaves Ctrl-C to Lightning (stop at once, no save).
        """
        try:
            self.signum = signal.Signals[requeue_signal]
        except KeyError:
            raise LokiError(f"ClusterSignals requeue_signal {requeue_signal!r} is not a signal "
                            "name; write e.g. SIGUSR1") from None
        if check_every_n_steps is not None and check_every_n_steps < 1:
            raise LokiError(f"ClusterSignals check_every_n_steps must be >= 1, got "
                            f"{check_every_n_steps}")
        self.check_every = check_every_n_steps
        self.save_on_interrupt = save_on_interrupt
        self.requested = False  # set by the signal handler; nothing else happens there
        self.interrupted = False  # set by the first Ctrl-C
        self._previous_handler: Any = None
        self._previous_sigint: Any = None
        self._trainer: L.Trainer | None = None

    # ------------------------------------------------------------------ setup
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and slurm_job_id() is not None and trainer.checkpoint_callback is None:
            raise LokiError("ClusterSignals saves the requeued job's checkpoint where a "
                            "ModelCheckpoint keeps the run's, and the config has none: add one "
                            "(with dirpath), or remove ClusterSignals")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after Lightning registered its own handlers (at the end of its setup), before step 1
        self.every = self.check_every or max(1, int(trainer.log_every_n_steps or 1))
        loop = trainer.fit_loop.epoch_loop
        broadcast = getattr(loop, "_broadcast_sigterm_tensor", None)
        if broadcast is not None and not getattr(broadcast, "throttled", False):
            loop._broadcast_sigterm_tensor = self._throttled(trainer, broadcast)
        if slurm_job_id() is not None:
            self._previous_handler = signal.signal(self.signum, self._note)
        folder = getattr(trainer.checkpoint_callback, "dirpath", None)
        if (self.save_on_interrupt and folder and self._previous_sigint is None
                and threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN):  # e.g. nohup ... &
            self._trainer = trainer
            self._previous_sigint = signal.signal(signal.SIGINT, self._note_interrupt)

    def _throttled(self, trainer: L.Trainer, broadcast: Any) -> Any:
        def on_check_steps() -> None:  # called at the start of each step with global_step done
            if trainer.global_step % self.every == 0:
                broadcast()

        on_check_steps.throttled = True  # type: ignore[attr-defined]
        return on_check_steps

    def _note(self, signum: int, frame: Any) -> None:
        self.requested = True

    def _note_interrupt(self, signum: int, frame: Any) -> None:
        if self.interrupted:  # the second Ctrl-C: stop now, as Lightning does
            self._restore_sigint()
            raise KeyboardInterrupt
        self.interrupted = True
        trainer = self._trainer
        if trainer is not None and trainer.is_global_zero:
            from loki.console import say

            step = (trainer.global_step // self.every + 1) * self.every  # the next check step
            say(f"\nCtrl-C: the run stops after step {step}, once its checkpoint is saved; "
                "press Ctrl-C again to stop now without one")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_sigint()  # no check step comes any more: Ctrl-C stops at once again

    def _restore_sigint(self) -> None:
        if self._previous_sigint is not None:
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._previous_handler is not None:
            signal.signal(self.signum, self._previous_handler)
            self._previous_handler = None
        self._restore_sigint()
        self._trainer = None

    # ------------------------------------------------------------------ the check
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step % self.every:
            return
        requeue, interrupt = self._agreed(trainer)
        if requeue:
            self._save_and_requeue(trainer)
        elif interrupt:
            self._save_and_stop(trainer)

    def _agreed(self, trainer: L.Trainer) -> tuple[bool, bool]:
        """Whether any rank got the requeue signal, and any a Ctrl-C: one all-reduce on check
        steps."""
        if trainer.world_size == 1 or not torch.distributed.is_initialized():
            return self.requested, self.interrupted
        flags = torch.tensor([int(self.requested), int(self.interrupted)],
                             device=trainer.strategy.root_device)
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        requeue, interrupt = flags.tolist()
        return bool(requeue), bool(interrupt)

    def _save_and_stop(self, trainer: L.Trainer) -> None:
        step = trainer.global_step
        path = Path(trainer.checkpoint_callback.dirpath) / f"interrupted-step={step}.ckpt"
        trainer.save_checkpoint(path)  # collective under FSDP2: every rank is here
        trainer.strategy.barrier("cluster-signals-interrupted")
        self._restore_sigint()
        raise KeyboardInterrupt  # Lightning's own Ctrl-C shutdown; loki fit names the checkpoint

    def _save_and_requeue(self, trainer: L.Trainer) -> None:
        from loki.console import say

        step = trainer.global_step
        path = Path(trainer.checkpoint_callback.dirpath) / f"requeue-step={step}.ckpt"
        trainer.save_checkpoint(path)  # collective under FSDP2: every rank is here
        trainer.strategy.barrier("cluster-signals-saved")
        job = slurm_job_id() or ""
        error = None
        if trainer.is_global_zero:
            error = _requeue(job)
        error = trainer.strategy.broadcast(error, src=0)
        if error is not None:
            raise LokiError(f"SLURM's {self.signum.name} came before the time limit: saved {path} "
                            f"at step {step}, but `scontrol requeue {job}` failed ({error}); "
                            f"resume with --ckpt_path {path}")
        if trainer.is_global_zero:
            say(f"SLURM's time limit is near ({self.signum.name}): saved {path} at step {step}; "
                f"job {job} is requeued and resumes from it (--ckpt_path last)")
        raise SystemExit(0)  # before the final evaluation: the run is not finished


def _requeue(job: str) -> str | None:
    """``scontrol requeue <job>``; None when it worked, else why not."""
    if not re.fullmatch(r"[0-9_]+", job):
        return f"no SLURM job id to requeue (SLURM_JOB_ID={job!r})"
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True,
                              timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return str(err)
    if done.returncode != 0:
        return (done.stderr or done.stdout).strip() or f"exit status {done.returncode}"
    return None
