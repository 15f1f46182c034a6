"""``LossSpikeRollback``: on a loss spike, go back to the last good state, reseed, continue.

The paper: "Whenever a loss spike occurs, we revert the model to the most recent checkpoint and
restart training with a different random seed." Here that is:

1. **Detect** on plain ``"lm"`` steps only (distillation losses are minima over candidates and live
   on another scale) with the rule of ``callbacks/spike_detector.py``, fed the step's loss
   (already averaged over ranks). Every rank reads the same averaged value and runs the same
   rule, so all ranks decide alike without a collective. On a GPU the loss is read without
   stalling the step: ``pl_module.last_train_loss_copy``, a non-blocking copy to pinned memory
   with a CUDA event behind it made at step s, is read at the end of step s + ``read_lag`` (the
   event is then long complete), so a spike is acted on one step later than it shows and the
   extra step is rolled back too. The sample ids of each step stay on the device until a
   rollback needs them.
2. **Targets** (``callbacks/rollback_targets.py``): an in-memory snapshot every
   ``snapshot_every_n_steps`` (CPU copies of model and optimizer state made by
   ``loki/snapshot.py``, ``tokens_seen``, DataModule state, detector statistics) and/or a
   Lightning checkpoint every ``checkpoint_every_n_steps`` (written to a temp file and renamed;
   older good ones are deleted only after a newer one is confirmed). A target taken at step s
   is only a *candidate* until ``persistence`` later LM losses are normal (the loss at s + 1 is
   the first that shows the weights of step s); one taken while losses are abnormal is never
   made.
   Checkpoints are loaded and checked for the keys a rollback needs before use; a truncated or
   half-written file is skipped (and reported), and the next older target is used.
3. **Roll back** to the most recent good target (``callbacks/rollback_restore.py``): parameters
   (bit-identical), optimizer state (also bitsandbytes 8-bit state), ``tokens_seen`` (which sets
   the LR and batch-size warmup), the DataModule state and the trainer's step counters
   (``callbacks/trainer_rewind.py``).
   ``global_step`` is rewound to the target's step, so ``max_steps`` counts surviving optimizer
   steps and the LR schedule, the step counters and the tokens agree; so is the loggers' step
   axis, once the spike step has logged its row: the discarded steps keep their rows at their
   own steps, and the replayed ones log at the steps an uninterrupted run of the same length
   logs them (so the report, the plots and the last validation line up). Replayed steps
   checkpoint and validate again (they are new training); ``ModelCheckpoint`` files of the
   discarded steps are renamed ``*.discarded-r<count>`` so that no resume picks them up by name.
4. **Reseed**: seed = hash(base seed, rollback count) goes to ``datamodule.reseed`` and to the
   torch/numpy/python RNGs. The sample ids of the steps between the target and the spike are
   logged, stored in the state and skipped: the DataModule is told they are consumed.
5. **Limit**: more than ``max_rollbacks`` spikes within ``rollback_window_tokens`` stop the run
   with a ``LokiError`` that says where the run is and what was tried.

Logged: ``rollback/count`` every step (``callbacks/wandb_dashboard.py`` puts ``rollback/*`` on
the ``trainer/tokens_seen`` axis); each rollback is reported by ``callbacks/rollback_report.py``
(loggers, ``<dirpath>/rollback-events.jsonl``, wandb). Count, history (with the skipped sample
ids) and detector statistics are in the callback's ``state_dict``, so a resumed run continues
them.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch

from callbacks.rollback_report import report_rollback
from callbacks.rollback_restore import restore
from callbacks.rollback_targets import discard, load_checkpoint, take_snapshot, write_checkpoint
from callbacks.spike_detector import SpikeDetector
from callbacks.trainer_rewind import rewind_log_step
from loki import atomic
from loki.data.order import key_of
from loki.data.schedules import parse_tokens
from loki.errors import LokiError
from loki.host_copy import HostCopy
from loki.step_logging import host_scalar


def derive_seed(base_seed: int, rollbacks: int) -> int:
    """The seed after the ``rollbacks``-th rollback (stable across runs and processes)."""
    return key_of("loss-spike-rollback", int(base_seed), int(rollbacks)) % (2**31 - 1)


class LossSpikeRollback(L.Callback):
    def __init__(
        self,
        sigma: float = 6.0,
        window: int = 128,
        ratio: float | None = 2.0,
        min_increase: float = 0.1,
        warmup_steps: int = 100,
        persistence: int = 1,
        snapshot_every_n_steps: int | None = 50,
        checkpoint_every_n_steps: int | None = None,
        dirpath: str | None = None,
        keep_checkpoints: int = 2,
        max_rollbacks: int = 3,
        rollback_window_tokens: int | str | None = None,
        seed: int | None = None,
        skip_spike_samples: bool = True,
        read_lag: int | None = None,
    ) -> None:
        """
        Args:
            sigma: a loss above mean + sigma * std of the trailing window is abnormal.
            window: LM steps in the trailing window (abnormal losses never enter it).
            ratio: a loss above ratio * trailing mean is abnormal too (None: off).
            min_increase: an abnormal loss also exceeds the mean by at least this many nats
                (keeps tiny-variance stretches late in training from firing).
            warmup_steps: normal LM steps seen before anything but non-finite losses counts.
            persistence: consecutive abnormal LM steps that make a spike (non-finite: always 1).
            snapshot_every_n_steps: in-memory (CPU) snapshot interval in optimizer steps.
            checkpoint_every_n_steps: on-disk rollback checkpoint interval (None: none).
            dirpath: folder of the rollback checkpoints (default: <default_root_dir>/rollback).
            keep_checkpoints: good rollback checkpoints kept on disk (at least 1).
            max_rollbacks: rollbacks allowed within ``rollback_window_tokens``; one more stops
                the run with an error.
            rollback_window_tokens: token window of that limit, e.g. ``20B`` (None: whole run).
            seed: base of the reseeding seeds (default: Lightning's ``seed_everything`` seed).
            skip_spike_samples: never serve again the samples of the steps that led to a spike.
            read_lag: steps between a loss and its reading (None: 1 on CUDA, where reading at
                once would wait for the GPU every step; 0 elsewhere).
        """
        super().__init__()
        if snapshot_every_n_steps is None and checkpoint_every_n_steps is None:
            raise LokiError("LossSpikeRollback needs snapshot_every_n_steps and/or "
                            "checkpoint_every_n_steps: there is nothing to roll back to")
        if keep_checkpoints < 1 or max_rollbacks < 0:
            raise LokiError("LossSpikeRollback: keep_checkpoints >= 1 and max_rollbacks >= 0")
        self.detector = SpikeDetector(sigma, window, ratio, min_increase, warmup_steps,
                                      persistence)
        self.snapshot_every = snapshot_every_n_steps
        self.checkpoint_every = checkpoint_every_n_steps
        self.dirpath, self.keep_checkpoints = dirpath, keep_checkpoints
        self.max_rollbacks = max_rollbacks
        self.window_tokens = (None if rollback_window_tokens is None
                              else parse_tokens(rollback_window_tokens))
        self.seed, self.skip_spike_samples = seed, skip_spike_samples
        if read_lag is not None and read_lag < 0:
            raise LokiError(f"LossSpikeRollback read_lag must be >= 0, got {read_lag}")
        self.read_lag = read_lag
        self._pending: list[tuple[int, HostCopy]] = []  # LM losses not yet judged
        # state saved with the run
        self.count = 0
        self.history: list[dict[str, Any]] = []
        self.good_checkpoints: list[dict[str, Any]] = []  # {"step", "path"}, oldest first
        self.step_indices: list[tuple[int, torch.Tensor]] = []  # (step, sample ids) since targets
        # in memory only
        self.snapshot: dict[str, Any] | None = None  # the good one
        self.candidates: list[dict[str, Any]] = []  # {"step", "kind", "normal", ...}
        self.last_target: dict[str, Any] | None = None  # what the last rollback restored
        self._log_rewind = 0  # steps the loggers' axis goes back once the spike step has logged

    # ------------------------------------------------------------------ set-up
    @property
    def state_key(self) -> str:
        return self._generate_state_key(snapshot=self.snapshot_every, ckpt=self.checkpoint_every)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        dm = trainer.datamodule
        missing = [m for m in ("state_dict", "load_state_dict", "reseed")
                   if not callable(getattr(dm, m, None))]
        if dm is None or missing:
            raise LokiError(
                f"LossSpikeRollback needs a DataModule with state_dict/load_state_dict/reseed "
                f"(got {type(dm).__name__}, missing {', '.join(missing) or 'the DataModule'}); "
                "use loki.data.LokiDataModule or drop the callback")
        if not hasattr(pl_module, "tokens_seen") or pl_module.automatic_optimization:
            raise LokiError("LossSpikeRollback works with LokiLM (manual optimization, "
                            "tokens_seen); got " + type(pl_module).__name__)
        if self.skip_spike_samples and "consumed" not in dm.state_dict().get("stream", {}):
            raise LokiError(f"{type(dm).__name__}.state_dict() has no stream.consumed counters, "
                            "so the spike window cannot be skipped; set "
                            "skip_spike_samples: false to only reseed")
        from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy

        if self.checkpoint_every and isinstance(trainer.strategy,
                                                (FSDPStrategy, ModelParallelStrategy)):
            raise LokiError(f"LossSpikeRollback: on-disk rollback checkpoints are read as one "
                            f"file, but {type(trainer.strategy).__name__} writes sharded ones; set "
                            "checkpoint_every_n_steps: null and use snapshot_every_n_steps")
        if self.seed is None:
            self.seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        if self.read_lag is None:
            self.read_lag = 1 if trainer.strategy.root_device.type == "cuda" else 0
        if self.dirpath is None:
            self.dirpath = os.path.join(trainer.default_root_dir, "rollback")
        if trainer.is_global_zero:  # what killed writes left behind (no rollback reads them)
            atomic.clean_stale(self.dirpath, ("rollback-*.ckpt.tmp",))

    # ------------------------------------------------------------------ every step
    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self._rewind_log_step(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._rewind_log_step(trainer)  # a target on a validation step validates again first

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._rewind_log_step(trainer)

    def _rewind_log_step(self, trainer: L.Trainer) -> None:
        if self._log_rewind:
            rewind_log_step(trainer, self._log_rewind)
            self._log_rewind = 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: dict, batch_idx: int) -> None:
        step = trainer.global_step
        if batch.get("kind", "lm") == "lm":
            if "index" in batch:  # kept where it is; copied to the CPU only for a rollback
                self.step_indices.append((step, batch["index"].detach().reshape(-1)))
            self._pending.append((step, pl_module.last_train_loss_copy or HostCopy(None)))
        while self._pending and self._pending[0][0] <= step - (self.read_lag or 0):
            loss_step, reading = self._pending.pop(0)
            loss = reading.value()
            verdict, reason = self.detector.observe(loss)
            if verdict == "spike":
                if loss_step != step:
                    reason += f" (loss of step {loss_step}, read at step {step})"
                self._roll_back(trainer, pl_module, step, loss, reason)
                return
            self._update_candidates(trainer, verdict == "normal", loss_step)
        pl_module.log("rollback/count", host_scalar(self.count), on_step=True,
                      reduce_fx="max")
        if self.detector.calm:
            if self.snapshot_every and step % self.snapshot_every == 0:
                self.candidates.append(take_snapshot(trainer, pl_module, step,
                                                     self.detector.state_dict()))
            if self.checkpoint_every and step % self.checkpoint_every == 0:
                self.candidates.append(write_checkpoint(trainer, self.dirpath, step, self.count))

    def _update_candidates(self, trainer: L.Trainer, normal: bool, loss_step: int) -> None:
        """A candidate becomes good after ``persistence`` normal LM losses of later steps; any
        abnormal loss before that discards it (its weights may be where the spike began)."""
        keep = []
        for cand in self.candidates:
            if not normal:
                discard(trainer, cand)
                continue
            if cand["step"] >= loss_step:  # (read_lag) a loss from before the snapshot
                keep.append(cand)
                continue
            cand["normal"] += 1
            if cand["normal"] < self.detector.persistence:
                keep.append(cand)
            elif cand["kind"] == "memory":
                self.snapshot = cand
            else:
                self.good_checkpoints.append({"step": cand["step"], "path": cand["path"]})
                while len(self.good_checkpoints) > self.keep_checkpoints:
                    discard(trainer, self.good_checkpoints.pop(0))
        self.candidates = keep
        oldest = min([t["step"] for t in self._targets()], default=None)
        if oldest is not None:
            self.step_indices = [(s, i) for s, i in self.step_indices if s > oldest]

    def _targets(self) -> list[dict[str, Any]]:
        return ([self.snapshot] if self.snapshot else []) + list(self.good_checkpoints)

    # ------------------------------------------------------------------ targets
    def _best_target(self, trainer: L.Trainer) -> dict[str, Any] | None:
        """The most recent good target that loads (memory wins a tie: it is faster)."""
        while True:
            disk = self.good_checkpoints[-1] if self.good_checkpoints else None
            if self.snapshot and (disk is None or self.snapshot["step"] >= disk["step"]):
                return self.snapshot
            if disk is None:
                return None
            # every rank must agree on whether the file loads
            target = load_checkpoint(disk["path"], trainer, self.state_key)
            if trainer.strategy.reduce_boolean_decision(target is not None, all=True):
                return target
            self.good_checkpoints.pop()

    # ------------------------------------------------------------------ rollback
    def _roll_back(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int,
                   loss: float | None, reason: str) -> None:
        tokens = int(pl_module.tokens_seen)
        recent = [h for h in self.history if self.window_tokens is None
                  or h["spike_tokens"] > tokens - self.window_tokens]
        for cand in self.candidates:
            discard(trainer, cand)
        self.candidates = []
        target = self._best_target(trainer) if len(recent) < self.max_rollbacks else None
        if target is None:
            tried = "; ".join(f"step {h['spike_step']} -> {h['target_step']} seed {h['seed']}"
                              for h in recent) or "none"
            why = (f"{len(recent)} rollbacks within the last "
                   f"{self.window_tokens or 'run'} tokens (max_rollbacks={self.max_rollbacks})"
                   if len(recent) >= self.max_rollbacks else
                   "no good rollback target yet (raise warmup_steps or snapshot more often)")
            raise LokiError(
                f"loss spike at step {step} ({tokens} tokens): {reason}; {why}; rollbacks "
                f"tried: {tried}; lower the LR or inspect the logged sample ids, then resume "
                "from an earlier checkpoint")

        self.count += 1
        new_seed = derive_seed(self.seed or 0, self.count)
        window = [i for s, i in self.step_indices if s > target["step"]]
        window_ids = (torch.cat([i.cpu() for i in window]) if window
                      else torch.zeros(0, dtype=torch.long))
        if trainer.world_size > 1:  # every rank trained on other samples
            window_ids = trainer.strategy.all_gather(window_ids.to(pl_module.device))
        window_ids = torch.unique(window_ids.reshape(-1).cpu())
        self._pending = []  # losses of the steps being discarded
        self._log_rewind += step - target["step"]  # after this step's row (_rewind_log_step)
        restore(trainer, pl_module, target, new_seed,
                window_ids.tolist() if self.skip_spike_samples else None,
                f"discarded-r{self.count}")
        if target["detector"] is not None:
            self.detector.load_state_dict(target["detector"])
        else:
            self.detector.abnormal.clear()
        self.step_indices = [(s, i) for s, i in self.step_indices if s <= target["step"]]
        self.last_target = target

        event = {"rollback": self.count, "spike_step": step, "spike_tokens": tokens,
                 "loss": None if loss is None else float(loss), "reason": reason,
                 "target_step": target["step"], "target_tokens": int(target["tokens_seen"]),
                 "target": target.get("path", "memory"), "seed": new_seed,
                 # the loggers' step of this step's metrics (x axis of metrics.csv plots)
                 "log_step": trainer.fit_loop.epoch_loop._batches_that_stepped,
                 "skipped_samples": window_ids.tolist()}
        self.history.append(event)
        report_rollback(trainer, pl_module, event, self.dirpath)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count, "history": copy.deepcopy(self.history),
                "detector": self.detector.state_dict(),
                "good_checkpoints": list(self.good_checkpoints),
                "step_indices": [(s, i.cpu().clone()) for s, i in self.step_indices]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.count = int(state_dict["count"])
        self.history = list(state_dict["history"])
        self.detector.load_state_dict(state_dict["detector"])
        self.good_checkpoints = [c for c in state_dict.get("good_checkpoints", [])
                                 if Path(c["path"]).is_file()]
        self.step_indices = list(state_dict.get("step_indices", []))
