"""``loki fit|validate|test``: LightningCLI over ``LokiLM`` and ``LokiDataModule``.

On top of Lightning's CLI, every run gets what makes a failed command lose nothing:

- checkpoints written atomically in their own folder (``AtomicCheckpointIO``; FSDP2's checkpoint
  folders through ``loki.checkpoint_sharded``), stale temp files of killed writes removed at start;
- ``loki fit`` checks ``--ckpt_path``, the folders it will write, the run already in them, the
  callbacks' inputs and the data before any logger or callback touches the run folder
  (``loki.preflight``, ``loki.preflight_run``), and every subcommand checks its config against
  this machine before the model is built (``loki.preflight_config``);
- a ``ResumableCSVLogger`` told where a resumed run continues, so ``metrics.csv`` stays one
  history, and a ``ConsoleLogger`` told the token and step budgets, for its ETA;
- ``config.yaml`` in the log folder written with secrets redacted, once training starts;
- validate, test and predict log into their own folder, never into the training run's.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from jsonargparse import ArgumentError
from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from loki import atomic
from loki.checkpoint_io import AtomicCheckpointIO
from loki.checkpoint_sharded import adopt, finish_interrupted_swaps
from loki.console import say
from loki.console_metrics import ConsoleLogger, start_line
from loki.data import LokiDataModule
from loki.errors import LokiError, one_line
from loki.metrics_csv import evaluation_log_folder
from loki.metrics_log import NEW_RUN, ResumableCSVLogger
from loki.module import LokiLM
from loki.preflight import SPECIAL_CKPT, check_checkpoint, check_fit, is_complete, logged_step
from loki.preflight_config import check_config
from loki.redact import redact

log = logging.getLogger(__name__)


class RedactedConfig(SaveConfigCallback):
    """Lightning's ``SaveConfigCallback`` with secrets redacted and an atomic write, written when
    training starts (a fit refused or failed before it leaves the earlier ``config.yaml``);
    for validate, test and predict into their own CSV log folder (see ``LokiCLI``), never the
    training run's."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            self._save(trainer, pl_module, stage, _own_csv_folder(trainer))

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        log_dir = trainer.log_dir if self.save_to_log_dir else None  # this broadcasts it
        self._save(trainer, pl_module, "fit", log_dir)

    def _save(self, trainer: Trainer, pl_module: LightningModule, stage: str,
              log_dir: str | None) -> None:
        if self.already_saved:
            return
        if self.save_to_log_dir and trainer.is_global_zero and log_dir is not None:
            import yaml

            text = self.parser.dump(self.config, skip_none=False)
            plain = redact(yaml.safe_load(text))
            atomic.write_text(os.path.join(log_dir, self.config_filename),
                              yaml.safe_dump(plain, sort_keys=False))
        if trainer.is_global_zero:
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)


def _own_csv_folder(trainer: Trainer) -> str | None:
    """The log folder ``LokiCLI`` gave a validate/test/predict run (None: no CSV logger)."""
    for logger in trainer.loggers:
        if isinstance(logger, ResumableCSVLogger):
            return trainer.strategy.broadcast(logger.log_dir)
    return None


def _leaves(section: Any) -> dict[str, Any]:
    """A parsed config section as {"a.b": leaf} (jsonargparse's own flattening)."""
    return dict(section.items()) if hasattr(section, "items") else {}


class LokiCLI(LightningCLI):
    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        self._ckpt_step: int | None = None  # the --ckpt_path checkpoint's logging step
        self._args = list(sys.argv[1:] if args is None else args)  # for the resume hint
        try:
            super().__init__(
                LokiLM,
                LokiDataModule,
                args=args,
                run=run,
                auto_configure_optimizers=False,  # LokiLM takes its optimizer as an argument
                save_config_callback=RedactedConfig,
                save_config_kwargs={"overwrite": True},
            )
        except ArgumentError as err:
            # jsonargparse's message names the key or value at fault; keep it to one line.
            raise LokiError(one_line(err, args)) from None

    def _parse_ckpt_path(self) -> None:
        # Lightning reads the checkpoint's hyper-parameters into the config here, before any
        # hook: a truncated or empty file must fail in one line now, not with torch's traceback.
        sub = self.config.get("subcommand")
        ckpt_path = self.config[sub].get("ckpt_path") if sub else None
        if sub in ("validate", "test") and ckpt_path is None:  # else: freshly initialized weights
            raise LokiError(f"loki {sub} evaluates a checkpoint: pass --ckpt_path (e.g. "
                            "<run folder>/checkpoints/last.ckpt)")
        if ckpt_path is not None and str(ckpt_path) not in SPECIAL_CKPT and "://" not in str(
                ckpt_path):
            info = check_checkpoint(ckpt_path, resume=sub == "fit")
            self._ckpt_step = logged_step(info.get("checkpoint") or {})
        before = _leaves(self.config[sub].get("model")) if sub else {}
        super()._parse_ckpt_path()
        after = _leaves(self.config[sub].get("model")) if sub else {}
        changed = [f"{k} {before[k]!r} -> {after[k]!r}" for k in sorted(before)
                   if k in after and before[k] != after[k]]
        from loki.console import is_rank_zero

        if changed and is_rank_zero():  # Lightning's rule; say so: the config asked otherwise
            say(f"--ckpt_path {ckpt_path}: the model settings saved in the checkpoint replace the "
                f"config's: {', '.join(changed)}")

    def before_instantiate_classes(self) -> None:
        # before LokiLM.__init__ allocates the weights, and before the Trainer refuses the
        # accelerator with a traceback
        sub = self.config.get("subcommand")
        if sub:
            check_config(self.config[sub], sub)

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        kwargs.setdefault("exit_on_error", False)
        return super().init_parser(**kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The tokenizer decides the vocabulary; the model follows the data, never the reverse.
        parser.link_arguments("data.vocab_size", "model.vocab_size", apply_on="instantiate")
        parser.link_arguments("data.tokenizer_spec", "model.tokenizer", apply_on="instantiate")

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        dm = self.datamodule
        if isinstance(dm, LokiDataModule) and dm.hparams.get("tokenizer") is None:
            # The model's ``tokenizer`` is linked to the spec the data took (the shards' when
            # data.tokenizer is unset); record the same on the data side, since Lightning
            # refuses to log one hparam key with two values.
            dm.hparams["tokenizer"] = dm._hparams_initial["tokenizer"] = dm.tokenizer_spec

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        config = self._get(self.config_init, "trainer", default={})
        plugins = kwargs.get("plugins", config.get("plugins"))
        plugins = [] if plugins is None else list(plugins) if isinstance(plugins, list | tuple) \
            else [plugins]
        strategy = config.get("strategy")
        # DeepSpeed writes its own checkpoint folders and takes no CheckpointIO.
        if not any(isinstance(p, CheckpointIO) for p in plugins) and "deepspeed" not in str(
                strategy).lower():
            plugins.append(AtomicCheckpointIO())
        trainer = super().instantiate_trainer(**{**kwargs, "plugins": plugins})
        adopt(trainer.strategy)  # FSDP2's checkpoint folders, written whole or not at all
        return trainer

    def before_fit(self) -> None:
        for folder in self._checkpoint_folders():  # every rank, before any looks for a checkpoint
            for path in finish_interrupted_swaps(folder):
                if self.trainer.is_global_zero:
                    say(f"{path}: moved into place; a save was killed between setting the "
                        "previous one aside and moving this one in")
        ckpt_path = self._resolve_last(self.config_init[self.subcommand].get("ckpt_path"))
        info = check_fit(self.trainer, self.model, self.datamodule, ckpt_path)
        resume = NEW_RUN if ckpt_path is None else (info or {}).get("log_step")
        if ckpt_path is not None:  # callbacks that continue what the checkpoint's fit began
            saved = ((info or {}).get("checkpoint") or {}).get("callbacks") or {}
            for cb in self.trainer.callbacks:
                if hasattr(cb, "resume_from"):  # e.g. WandbDashboard: the same wandb run
                    cb.resume_from(self.trainer, saved.get(cb.state_key))
        for logger in self.trainer.loggers:
            if isinstance(logger, ResumableCSVLogger):
                logger.resume_at(resume)
            if isinstance(logger, ConsoleLogger):  # the budgets of the console's ETA
                if isinstance(self.datamodule, LokiDataModule):
                    logger.total_tokens = self.datamodule.max_tokens
                logger.total_steps = self.trainer.max_steps if self.trainer.max_steps > 0 else None
        from loki.resume import ReplaceLastCheckpoint, ResumeHint, SetAsideReplacedCheckpoints

        if self.trainer.is_global_zero:
            self._say_start((info or {}).get("global_step") if ckpt_path is not None else None)
            for folder in self._checkpoint_folders():
                if removed := atomic.clean_stale(folder):
                    say(f"{folder}: removed {', '.join(p.name for p in removed)}, left by a "
                        "checkpoint save that was cut short; the complete checkpoints are as "
                        "they were")
        self.trainer.callbacks.append(ResumeHint(self._args))
        if ckpt_path is not None:
            self.trainer.callbacks.append(ReplaceLastCheckpoint())
        step = (info or {}).get("global_step")
        if ckpt_path is not None and step is not None and ckpt_path not in SPECIAL_CKPT:
            self.trainer.callbacks.append(SetAsideReplacedCheckpoints(step, ckpt_path))

    def _checkpoint_folders(self) -> list[str]:
        """The local folders of the trainer's ModelCheckpoints."""
        return [cb.dirpath for cb in self.trainer.callbacks if isinstance(cb, ModelCheckpoint)
                and cb.dirpath and "://" not in str(cb.dirpath)]

    def _resolve_last(self, ckpt_path: str | None) -> str | None:
        """``--ckpt_path last`` (what a requeued cluster job passes): the run's newest checkpoint,
        then checked and resumed as if named, or a new run where its folders hold none."""
        if ckpt_path != "last":
            return ckpt_path
        from loki.resume import checkpoints_newest_first

        folders = [getattr(cb, "dirpath", None) for cb in self.trainer.checkpoint_callbacks]
        if not folders or None in folders:
            raise LokiError("--ckpt_path last looks for the run's checkpoints in its "
                            "ModelCheckpoint folders: give the config a ModelCheckpoint with "
                            "dirpath set (Lightning picks a default folder only once training "
                            "has started)")
        resolved = None
        for path, _ in checkpoints_newest_first(self.trainer):
            if is_complete(path):
                resolved = str(path)
                break
            if self.trainer.is_global_zero:  # e.g. a save killed by a run without checkpoint_sharded
                say(f"--ckpt_path last: {path} is incomplete (its save was cut short), so the "
                    "newest complete checkpoint is taken instead")
        self.config_init[self.subcommand]["ckpt_path"] = resolved  # what trainer.fit gets
        return resolved

    def _say_start(self, step: int | None) -> None:
        from lightning.pytorch import strategies as st

        names = ((st.ModelParallelStrategy, "FSDP2"), (st.FSDPStrategy, "FSDP"),
                 (st.DDPStrategy, "DDP"), (st.SingleDeviceStrategy, ""))
        used = self.trainer.strategy
        strategy = next((name for cls, name in names if isinstance(used, cls)),
                        type(used).__name__.removesuffix("Strategy"))
        config = self.model.hparams.get("config")
        dm = self.datamodule
        say(start_line(config if isinstance(config, str) else "Loki", self.model.config,
                       self.trainer.world_size, self.trainer.strategy.root_device.type, strategy,
                       dm.max_tokens if isinstance(dm, LokiDataModule) else None, step))

    def _before_evaluation(self) -> None:
        """validate/test/predict log into their own folder beside the training run's metrics
        (``<csv>/<subcommand>-<UTC time>/``), at the checkpoint's step, so they neither add a
        row to the training history nor replace its ``config.yaml``; into a wandb run of their
        own (``<name>-validate-step<N>``, job type ``validate``); a fit's console lines are
        left out."""
        for logger in self.trainer.loggers:
            if isinstance(logger, ResumableCSVLogger) and logger._experiment is None:
                logger._version = evaluation_log_folder(self.subcommand)
            if type(logger).__name__ == "WandbLogger" and logger._experiment is None:
                # a wandb run of its own, named for what it is, never the training run's
                init = logger._wandb_init
                at = "" if self._ckpt_step is None else f"-step{self._ckpt_step}"
                init.update(id=None, job_type=self.subcommand,
                            name=f"{init.get('name') or 'loki'}-{self.subcommand}{at}")
                logger._id, logger._name = None, init["name"]
        # the closing line (``_after_evaluation``) says what a ConsoleLogger would, once
        self.trainer.loggers = [lg for lg in self.trainer.loggers
                                if not isinstance(lg, ConsoleLogger)]
        if self._ckpt_step is not None:
            # what Lightning logs validation metrics at; the checkpoint's own rows used it
            self.trainer.fit_loop.epoch_loop._batches_that_stepped = self._ckpt_step

    before_validate = before_test = before_predict = _before_evaluation

    def _after_evaluation(self) -> None:
        """One line on rank 0 with what the evaluation measured and where it is logged (the
        quiet console keeps Lightning's own table in the log)."""
        if not self.trainer.is_global_zero:
            return
        prefix = "test/" if self.subcommand == "test" else "val/"
        scores = {k: float(v) for k, v in self.trainer.callback_metrics.items()
                  if k.startswith(prefix)}
        where = next((lg.log_dir for lg in self.trainer.loggers
                      if isinstance(lg, ResumableCSVLogger)), None)
        say(f"{self.subcommand} {self.config_init[self.subcommand].get('ckpt_path')}: "
            + (", ".join(f"{k} {v:.4f}" for k, v in sorted(scores.items())) or "nothing logged")
            + ("" if where is None else f"; logged in {where}"))

    after_validate = after_test = _after_evaluation
