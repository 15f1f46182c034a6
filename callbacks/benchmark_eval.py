"""``OneShotBenchmarkEval``: the benchmark suite, once per run, at the end of fit.

The paper evaluated its chosen checkpoint once, so that no decision was tuned on benchmark scores.
This callback keeps that rule in code:

- it evaluates at ``on_fit_end``: the final in-memory model, or a chosen checkpoint file;
- it records that it ran in three places: its own state (saved in checkpoints, so a resumed run
  knows), the run folder (``<output_dir>/EVAL_DONE.json``) and the evaluated checkpoint
  (``<output_dir>/evaluated.ckpt`` holding the final weights, or the chosen file), under the
  checkpoint key ``"loki_eval"``;
- it refuses a second run unless ``force`` is set with a ``force_reason``; both appear in the
  results and in the Markdown.

Outputs: ``results.json`` and ``results.md`` (Table 1 layout) in ``output_dir``, and, with a
``WandbLogger`` attached, a wandb table ``eval/table1`` plus one ``eval/<row>`` metric per row.

Several ranks (DDP, FSDP2): rank 0 evaluates alone and writes everything once. Under FSDP2 the
blocks are sharded, so a forward on one rank would wait in all-gathers for ranks that are not
running it; the full weights are therefore first gathered onto rank 0 (a collective every rank
joins, once) into a plain ``Loki``. While rank 0 evaluates, the other ranks poll the process
group's key-value store for its "done" key: they hold no collective, so no collective timeout
can fire however long the suite takes. ``evaluated.ckpt`` is a file, or with
``save_distributed_checkpoint`` a folder whose ``meta.pt`` carries the record.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from loki.checkpoint_read import LIGHTNING_META
from loki.errors import LokiError
from loki.eval.suite import SuiteConfig, already_ran, check_once, run_suite
from loki.sharding import is_sharded

log = logging.getLogger(__name__)
# how a user of `loki fit` forces a second run of the suite
FORCE_HOW = ("set force: true and force_reason: '<why>' in OneShotBenchmarkEval's init_args "
             "(or enabled: false to train on without it)")
CKPT_KEY = "loki_eval"
POLL_SECONDS = 2.0  # how often the waiting ranks look for rank 0's "done" key


class OneShotBenchmarkEval(Callback):
    def __init__(
        self,
        suite: SuiteConfig | dict | None = None,
        output_dir: str | None = None,
        checkpoint: str = "final",
        tokenizer: str | None = None,
        batch_size: int = 8,
        max_length: int | None = None,
        force: bool = False,
        force_reason: str | None = None,
        enabled: bool = True,
    ) -> None:
        """
        Args:
            suite: presets, tasks and data of the suite (see ``loki.eval.suite.SuiteConfig``).
            output_dir: results folder (default: ``<trainer.default_root_dir>/eval``).
            checkpoint: ``"final"`` (the model as fit ends) or a checkpoint path to evaluate.
            tokenizer: tokenizer spec (default: the one the module records, ``hparams.tokenizer``).
            batch_size: requests per forward pass.
            max_length: context tokens (default: block_size; ALiBi allows more).
            force: run even though the suite already ran for this run/checkpoint.
            force_reason: why; required with ``force`` and written into the results.
            enabled: switch the callback off from YAML without removing it.
        """
        self.suite = suite if isinstance(suite, SuiteConfig) else SuiteConfig(**(suite or {}))
        self.output_dir = output_dir
        self.checkpoint = checkpoint
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length
        self.force = force
        self.force_reason = force_reason
        self.enabled = enabled
        self.record: dict[str, Any] | None = None  # set once the suite has run
        if force and not force_reason:
            raise LokiError("OneShotBenchmarkEval(force=True) needs a force_reason")

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"record": self.record}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.record = state_dict.get("record")

    def _out(self, trainer: L.Trainer) -> Path:
        return Path(self.output_dir or os.path.join(trainer.default_root_dir, "eval"))

    def _previous(self, trainer: L.Trainer, record: dict | None = None) -> dict | None:
        record = self.record if record is None else record
        if record is not None:
            return record
        previous = already_ran(self._out(trainer))
        if previous is None and self.checkpoint != "final":
            previous = read_record(self.checkpoint)
        return previous

    def finished_run(self, trainer: L.Trainer) -> Path | None:
        """Where the suite already ran for this run (so the run is finished and not resumed
        unless forced); None when it has not run, is forced, or is off."""
        if self.enabled and not self.force and self._previous(trainer) is not None:
            return self._out(trainer)
        return None

    def check_fit(self, trainer: L.Trainer, saved: dict[str, Any] | None = None) -> None:
        """Refuse a fit whose run already ran the suite (unless forced): fail before training,
        not after it. ``saved``: this callback's state in the checkpoint the fit resumes from,
        for ``loki fit``'s preflight, which runs before Lightning restores it."""
        if self.enabled:
            check_once(self._previous(trainer, (saved or {}).get("record")), self.force,
                       self.force_reason, str(self._out(trainer)), FORCE_HOW)

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            self.check_fit(trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.enabled:
            return
        out = self._out(trainer)
        check_once(self._previous(trainer), self.force, self.force_reason, str(out), FORCE_HOW)
        # every rank joins: a token naming this evaluation, and (FSDP2) the weight gather
        key = trainer.strategy.broadcast(f"loki_eval/{uuid.uuid4().hex}")
        model = self._full_model(trainer, pl_module) if self.checkpoint == "final" else None
        summary = None
        if trainer.is_global_zero:
            from loki.console import say

            say(f"\none-shot benchmark suite ({self.suite.preset}): evaluating the "
                f"{'final model' if self.checkpoint == 'final' else self.checkpoint} ...")
            try:
                summary = self._evaluate(pl_module, model, out)
                say(f"one-shot benchmark suite: average {100 * summary['average']:.2f} in "
                    f"{summary['seconds']:.0f} s; results in {out / 'results.md'}")
                self._log_wandb(trainer, summary)
            except BaseException:
                _signal(trainer, key, "failed")
                raise
            _signal(trainer, key, "done")
        else:
            _wait_for(trainer, key)
        record = trainer.strategy.broadcast(
            None if summary is None else {
                "time": summary["time"], "output_dir": str(out), "checkpoint": self.checkpoint,
                "forced": summary["forced"], "force_reason": summary["force_reason"],
                "average": summary["average"], "preset": self.suite.preset})
        self.record = record
        path = self.checkpoint
        if self.checkpoint == "final":
            # keep the evaluated weights (the last periodic checkpoint may be older); a folder
            # of shards under FSDP2 with save_distributed_checkpoint
            path = str(out / "evaluated.ckpt")
            trainer.save_checkpoint(path, weights_only=True)
        if trainer.is_global_zero:
            _add_record(path, record)
        trainer.strategy.barrier()

    def _full_model(self, trainer: L.Trainer,
                    pl_module: L.LightningModule) -> torch.nn.Module | None:
        """The model rank 0 evaluates: ``pl_module.model`` itself when its weights are whole
        (one device, DDP), else (FSDP2) a plain ``Loki`` with the gathered full weights."""
        if not is_sharded(pl_module.model):
            return pl_module.model if trainer.is_global_zero else None
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
        )

        from loki.model import Loki

        state = get_model_state_dict(
            pl_module.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not trainer.is_global_zero:
            return None
        model = Loki(pl_module.config)
        model.load_state_dict(state)
        return model.to(pl_module.device)

    # ------------------------------------------------------------------ work
    def _evaluate(self, pl_module: L.LightningModule, model: torch.nn.Module | None,
                  out: Path) -> dict[str, Any]:
        from loki.eval.adapter import LokiEvalLM
        from loki.eval.loading import check_tokenizer
        from loki.tokenizer import LokiTokenizer

        if self.checkpoint == "final":
            spec = self.tokenizer or pl_module.hparams.get("tokenizer")
            if not spec:
                raise LokiError("OneShotBenchmarkEval needs a tokenizer: set tokenizer: <spec> or "
                                "the module's tokenizer argument")
            tok = LokiTokenizer.from_spec(spec)
            check_tokenizer(tok, pl_module.config, dict(pl_module.hparams), "the trained model")
            was_training = model is pl_module.model and model.training
            lm = LokiEvalLM.from_model(model, tok, batch_size=self.batch_size,
                                       max_length=self.max_length)
            evaluated = "final (in memory; saved as evaluated.ckpt)"
        else:
            was_training = None
            lm = LokiEvalLM(checkpoint=self.checkpoint, tokenizer=self.tokenizer,
                            batch_size=self.batch_size, device=str(pl_module.device),
                            max_length=self.max_length)
            evaluated = self.checkpoint
        try:
            return run_suite(lm, self.suite, out, force=self.force,
                             force_reason=self.force_reason if self.force else None,
                             metadata={"checkpoint": evaluated,
                                       "tokens_seen": getattr(pl_module, "tokens_seen", None)})
        finally:
            if was_training:
                pl_module.model.train()

    def _log_wandb(self, trainer: L.Trainer, summary: dict[str, Any]) -> None:
        from lightning.pytorch.loggers import WandbLogger

        for logger in trainer.loggers:
            if not isinstance(logger, WandbLogger):
                continue
            columns = ["benchmark", "shots", "metric", "score", "stderr"]
            data = [[label, r["num_fewshot"], r["metric"], 100 * r["value"],
                     None if r["stderr"] is None else 100 * r["stderr"]]
                    for label, r in summary["rows"].items()]
            data.append(["Average", None, "", 100 * summary["average"], None])
            logger.log_table(key="eval/table1", columns=columns, data=data)
            logger.log_metrics({f"eval/{label}": 100 * r["value"]
                                for label, r in summary["rows"].items()}
                               | {"eval/average": 100 * summary["average"]})

    def __repr__(self) -> str:
        return f"OneShotBenchmarkEval({asdict(self.suite)}, checkpoint={self.checkpoint!r})"


def _signal(trainer: L.Trainer, key: str, status: str) -> None:
    if trainer.world_size > 1:
        _store().set(key, status)


def _wait_for(trainer: L.Trainer, key: str) -> None:
    """Wait for rank 0's evaluation without holding a collective (see the module docstring)."""
    if trainer.world_size == 1:
        return
    store, start, said = _store(), time.monotonic(), 0.0
    while not store.check([key]):
        time.sleep(POLL_SECONDS)
        if time.monotonic() - said > 600:
            said = time.monotonic()
            log.info("rank %d: waiting for rank 0's benchmark evaluation (%.0f s)",
                     trainer.global_rank, said - start)
    if store.get(key).decode() != "done":
        raise LokiError("the benchmark evaluation failed on rank 0 (its log has the error)")


def _store() -> Any:
    from torch.distributed import distributed_c10d

    return distributed_c10d._get_default_store()


def read_record(path: str | Path) -> dict[str, Any] | None:
    """The one-shot record of a checkpoint file or distributed checkpoint folder, if any."""
    path = Path(path)
    if path.is_dir():
        path = path / LIGHTNING_META
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", mmap=True, weights_only=False).get(CKPT_KEY)


def _add_record(path: str, record: dict[str, Any] | None) -> None:
    """Write the record into a checkpoint file, or into the ``meta.pt`` of a distributed
    checkpoint folder (atomically: a crash leaves the old file)."""
    target = Path(path) / LIGHTNING_META if Path(path).is_dir() else Path(path)
    ckpt = torch.load(target, map_location="cpu", weights_only=False)
    ckpt[CKPT_KEY] = record
    tmp = f"{target}.tmp"
    torch.save(ckpt, tmp)
    os.replace(tmp, target)
