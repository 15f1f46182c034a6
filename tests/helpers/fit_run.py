"""A tiny ``loki fit`` run folder as a user has it: YAML, shards, metrics.csv, checkpoints."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from loki.errors import LokiError
from tests.data.fixtures import write_source


def write_run(folder: Path, max_steps: int = 12, every: int = 3, extra_callbacks: str = "",
              data_extra: str = "") -> Path:
    """Shards under ``folder/web`` and ``folder/run.yaml`` (LokiLM tiny, ResumableCSVLogger,
    a ModelCheckpoint every ``every`` steps keeping ``step=N.ckpt`` and ``last.ckpt``).
    ``data.tokenizer`` is left unset on purpose: the run takes the shards' tokenizer."""
    folder.mkdir(parents=True, exist_ok=True)
    shards = folder / "web"
    if not (shards / "manifest.json").exists():
        write_source(folder, n_docs=40, seed=3)
    path = folder / "run.yaml"
    path.write_text(f"""\
seed_everything: 0
model:
  config: tiny
data:
  sources: {{web: ["{shards}"]}}
  block_size: 16
  micro_batch_size: 2
  val_fraction: 0.05
  val_samples: 4
  seed: 7
{data_extra}trainer:
  accelerator: cpu
  devices: 1
  max_steps: {max_steps}
  log_every_n_steps: 2
  val_check_interval: 4
  check_val_every_n_epoch: null
  num_sanity_val_steps: 0
  enable_progress_bar: false
  enable_model_summary: false
  deterministic: true
  default_root_dir: "{folder}/run"
  logger:
    - class_path: loki.metrics_log.ResumableCSVLogger
      init_args: {{save_dir: "{folder}/run", name: csv, version: ""}}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{dirpath: "{folder}/run/checkpoints", save_last: true,
                   every_n_train_steps: {every}, save_top_k: -1, filename: "{{step}}"}}
{extra_callbacks}""")
    return path


# What an in-process distributed fit (Lightning's own launch, even of one process) leaves in
# os.environ: a `loki fit` started with it would take its ranks as launched from outside.
LAUNCHER_VARIABLES = {"LOCAL_RANK", "RANK", "GLOBAL_RANK", "NODE_RANK", "GROUP_RANK", "WORLD_SIZE",
                      "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}


def launch_env(**extra: str) -> dict[str, str]:
    """This process's environment for a `loki fit` subprocess that starts its own ranks."""
    env = {k: v for k, v in os.environ.items()
           if k not in LAUNCHER_VARIABLES and not k.startswith(("PL_", "TORCHELASTIC_"))}
    return {**env, **extra}


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (what "byte-identical afterwards" compares)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}



class FailAtTrainStart(Callback):
    """``--trainer.callbacks+=tests.helpers.fit_run.FailAtTrainStart``: a fit that fails where
    training begins (loggers, hyper-parameters and the checkpoint set up, no step taken)."""

    def on_train_start(self, trainer, pl_module) -> None:
        raise LokiError("stopped at train start (test)")


class CtrlCAtStep8(Callback):
    """``--trainer.callbacks+=tests.helpers.fit_run.CtrlCAtStep8``: the user presses Ctrl-C as
    the step after step 8 begins."""

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step == 8:
            raise KeyboardInterrupt


class RequeueSignalAtStep5(Callback):
    """``--trainer.callbacks+=tests.helpers.fit_run.RequeueSignalAtStep5``: SLURM's warning
    before the time limit (SIGUSR1) arrives as step 6 begins."""

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step == 5:
            import os
            import signal

            os.kill(os.getpid(), signal.SIGUSR1)


class SigintAtStep5(Callback):
    """``--trainer.callbacks+=tests.helpers.fit_run.SigintAtStep5``: the user presses Ctrl-C
    (SIGINT) as step 6 begins; ``presses=2`` presses it twice."""

    def __init__(self, presses: int = 1) -> None:
        self.presses = presses

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step == 5:
            import signal

            for _ in range(self.presses):
                os.kill(os.getpid(), signal.SIGINT)
