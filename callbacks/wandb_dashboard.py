"""``WandbDashboard``: tokens on the x-axis, one panel section per part of the recipe, a clean config.

A callback rather than a ``WandbLogger`` subclass: it works with whatever loggers the YAML lists
(``WandbLogger`` next to a ``CSVLogger``, or TensorBoard alone), keeps the stock logger class in
the YAML so ``wandb sync``/resume behave as documented, and does nothing at all when no
``WandbLogger`` is attached.

What it does when one is:

- ``define_metric`` for every metric family with ``trainer/tokens_seen`` as its step metric, so
  runs with different batch-size warmups line up (Lightning itself points everything at
  ``trainer/global_step``; the later, more specific globs here win). Summaries: min for losses,
  max for eval scores, last for the rest.
- Panel sections: wandb groups panels by the name before the first ``/``. ``LokiLM`` logs the LR
  and the accumulation inside ``train/``; this callback adds ``lr/group<i>`` (per parameter
  group) and ``batch/sequences``, ``batch/tokens`` (the effective batch of the step) so LR and
  batch size get their own sections. The rest come from their owners: ``throughput/``
  (ThroughputMonitor, MFU), ``distill/`` (per-source ``win_rate/<source>``, ``loss/<source>``),
  ``rollback/``, ``eval/``.
- The run config: model/datamodule hyper-parameters and the LightningCLI config, with secrets
  (API keys, tokens, passwords) replaced by ``"[redacted]"``, also over what Lightning logged.
- One wandb run per training run: the run's id is kept in every checkpoint (this callback's
  state), and a fit resumed from one continues that run (``resume_from``, called by ``loki fit``
  before the run starts; Lightning's WandbLogger asks wandb with ``resume="allow"``) rather than
  starting a new one at every resume or requeue. An ``id`` set in the YAML wins.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L

from loki.redact import REDACTED, is_secret, redact, secret_paths
from loki.redact import plain as _plain
from loki.step_logging import host_scalar

__all__ = ["REDACTED", "WandbDashboard", "is_secret", "redact", "secret_paths"]

TOKENS = "trainer/tokens_seen"

# (glob, summary) in the order they are defined; wandb applies the last matching definition.
METRIC_FAMILIES: tuple[tuple[str, str], ...] = (
    ("train/*", "last"),
    ("train/loss", "min"),
    ("lr/*", "last"),
    ("batch/*", "last"),
    ("val/*", "last"),
    ("val/loss", "min"),
    ("test/*", "last"),
    ("throughput/*", "last"),
    ("distill/*", "last"),
    ("rollback/*", "last"),
    ("eval/*", "max"),
)

def _redacting(log_hyperparams: Any) -> Any:
    def wrapped(params: Any) -> None:
        log_hyperparams(redact(_plain(vars(params) if hasattr(params, "__dict__")
                                      and not isinstance(params, Mapping) else params)))

    wrapped._loki_redacts = True  # type: ignore[attr-defined]
    return wrapped


class WandbDashboard(L.Callback):
    def __init__(self, log_batch_size: bool = True, log_lr_groups: bool = True,
                 extra_config: dict[str, Any] | None = None) -> None:
        """
        Args:
            log_batch_size: log ``batch/sequences`` and ``batch/tokens`` per optimizer step.
            log_lr_groups: log ``lr/group<i>`` for every optimizer parameter group.
            extra_config: more entries for the run config (secrets are redacted here too).
        """
        super().__init__()
        self.log_batch_size = log_batch_size
        self.log_lr_groups = log_lr_groups
        self.extra_config = extra_config or {}
        self.run_ids: list[str] = []  # of the attached WandbLoggers, in order (rank 0)

    @staticmethod
    def wandb_runs(trainer: L.Trainer) -> list[Any]:
        """The wandb runs of the attached WandbLoggers (empty: nothing to do; rank 0 only)."""
        if not trainer.is_global_zero:
            return []
        return [lg.experiment for lg in trainer.loggers if type(lg).__name__ == "WandbLogger"]

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not trainer.is_global_zero:
            return
        self.run_ids = []
        for logger in trainer.loggers:
            if type(logger).__name__ != "WandbLogger":
                continue
            self.define_metrics(logger.experiment)
            self.run_ids.append(str(logger.experiment.id))
            # Lightning logs the module/datamodule hparams after every on_fit_start hook, through
            # this method: redact there, so secrets in init args never reach the run.
            if not getattr(logger.log_hyperparams, "_loki_redacts", False):
                logger.log_hyperparams = _redacting(logger.log_hyperparams)

    def state_dict(self) -> dict[str, Any]:
        return {"run_ids": list(self.run_ids)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass  # the ids are read before the fit starts (resume_from), when they still matter

    @staticmethod
    def resume_from(trainer: L.Trainer, saved: dict[str, Any] | None) -> None:
        """Before a fit resumed from a checkpoint starts: point each WandbLogger that has no id
        of its own at the run the checkpoint's fit logged to (``saved``: this callback's state
        in that checkpoint; older checkpoints without it start a new run, as before)."""
        ids = (saved or {}).get("run_ids") or []
        loggers = [lg for lg in trainer.loggers if type(lg).__name__ == "WandbLogger"]
        for logger, run_id in zip(loggers, ids, strict=False):
            if getattr(logger, "_experiment", None) is None and not logger._wandb_init.get("id"):
                logger._wandb_init["id"] = logger._id = run_id  # with resume="allow" (Lightning)

    @staticmethod
    def define_metrics(run: Any) -> None:
        # hidden=False keeps the x-axis as a chart of its own (tokens vs optimizer step)
        run.define_metric(TOKENS, step_metric="trainer/global_step", summary="max")
        for glob, summary in METRIC_FAMILIES:
            run.define_metric(glob, step_metric=TOKENS, step_sync=True, summary=summary)

    def run_config(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        config: dict[str, Any] = {"model": _plain(dict(pl_module.hparams))}
        dm = trainer.datamodule
        if dm is not None and getattr(dm, "hparams", None):
            config["data"] = _plain(dict(dm.hparams))
        for cb in trainer.callbacks:  # LightningCLI's SaveConfigCallback holds the whole YAML
            if type(cb).__name__ == "SaveConfigCallback" and getattr(cb, "config", None):
                config["cli"] = _plain(cb.config)
        config.update(_plain(self.extra_config))
        return redact(config)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        runs = self.wandb_runs(trainer)
        if not runs:
            return
        config = self.run_config(trainer, pl_module)
        for run in runs:
            # Secrets passed to WandbLogger(config=...) itself are in the run already: overwrite
            # them (the synced run shows the redacted value; delete the local file to be sure).
            logged = dict(run.config)
            over = {}
            for path in secret_paths(logged):
                top, *rest = path.split(".")
                over[top] = redact(logged[top]) if rest else REDACTED
            run.config.update({**over, "loki": config}, allow_val_change=True)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        if not self._any_wandb(trainer):
            return
        if self.log_batch_size and isinstance(batch, Mapping) and "input_ids" in batch:
            ids = batch["input_ids"]
            shape = tuple(ids.shape)
            # (A, B, T) step batch, or (B, T) / (P, k, T) for a single micro-batch
            sequences = shape[0] * shape[1] if len(shape) == 3 else shape[0]
            sequences *= trainer.world_size
            pl_module.log("batch/sequences", host_scalar(sequences), on_step=True,
                          reduce_fx="max")
            pl_module.log("batch/tokens", host_scalar(sequences * shape[-1]), on_step=True,
                          reduce_fx="max")
        if self.log_lr_groups:
            for opt in trainer.optimizers[:1]:
                for i, group in enumerate(opt.param_groups):
                    pl_module.log(f"lr/group{i}", host_scalar(group["lr"]), on_step=True)

    @staticmethod
    def _any_wandb(trainer: L.Trainer) -> bool:
        # every rank must log the same keys, so the check does not depend on the rank
        return any(type(lg).__name__ == "WandbLogger" for lg in trainer.loggers)
