"""``InjectLossSpike``: cause a real loss spike at chosen steps, for tests and demos.

Nothing downstream knows about it: the spike is in the weights or in the loss the module
computes, so detection and rollback see exactly what a real spike would show them.

- ``mode: weights`` adds Gaussian noise of ``factor`` times the weight's own std to a weight
  matrix (default the LM head) just before the step: the loss jumps, and the update of that
  step is computed from the damaged weights, as after a bad update. (Noise, not scaling: a
  larger head can make an already good model more confident, i.e. lower the loss.)
- ``mode: loss`` multiplies the model's loss by ``factor`` during the step (a forward hook on
  ``pl_module.model``): the logged loss and the gradients both carry it. ``factor: .nan`` makes
  the loss (and, through backward, the weights) non-finite.

Each listed step fires once (a rolled-back run does not hit the same spike again) unless
``repeat`` is set; the steps fired are kept in the callback's state.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import lightning as L
import torch
from torch.distributed.tensor import DTensor

from loki.errors import LokiError

log = logging.getLogger(__name__)


class InjectLossSpike(L.Callback):
    def __init__(self, at_steps: list[int], factor: float = 20.0,
                 mode: Literal["weights", "loss"] = "weights", target: str = "lm_head",
                 repeat: bool = False) -> None:
        """
        Args:
            at_steps: optimizer steps (1-based: the step after which ``global_step`` equals it)
                whose loss is hit.
            factor: noise std in units of the weight's std (``weights``) or loss multiplier.
            mode: ``weights`` (noise on ``target``'s weight) or ``loss`` (scale the loss).
            target: submodule of ``pl_module.model`` whose ``weight`` ``weights`` mode hits.
            repeat: fire every time a listed step is reached (also after a rollback).
        """
        super().__init__()
        if mode not in ("weights", "loss"):
            raise LokiError(f"InjectLossSpike mode must be 'weights' or 'loss', got {mode!r}")
        self.at_steps, self.factor, self.mode = sorted(set(at_steps)), float(factor), mode
        self.target, self.repeat = target, repeat
        self.fired: list[int] = []
        self._hook: torch.utils.hooks.RemovableHandle | None = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        step = trainer.global_step + 1
        if step not in self.at_steps or (step in self.fired and not self.repeat):
            return
        if isinstance(batch, dict) and batch.get("kind", "lm") != "lm":
            return  # inject on plain LM steps, where detection looks
        self.fired.append(step)
        log.warning("InjectLossSpike: %s x %s at step %d", self.mode, self.factor, step)
        if self.mode == "weights":
            try:
                weight = pl_module.model.get_submodule(self.target).weight
            except AttributeError as err:
                raise LokiError(f"InjectLossSpike: model has no {self.target}.weight") from err
            if isinstance(weight, DTensor):  # FSDP2: each rank perturbs its own shard
                weight = weight.to_local()
            g = torch.Generator(device=weight.device).manual_seed(step)
            with torch.no_grad():
                noise = torch.randn(weight.shape, generator=g, device=weight.device)
                weight.add_(noise.to(weight.dtype) * (self.factor * weight.float().std()))
        else:
            self._hook = pl_module.model.register_forward_hook(self._scale_loss)

    def _scale_loss(self, module: torch.nn.Module, args: Any, output: Any) -> Any:
        logits, loss = output
        return logits, (None if loss is None else loss * self.factor)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        self._remove_hook()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule,
                     exception: BaseException) -> None:
        self._remove_hook()

    def _remove_hook(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def state_dict(self) -> dict[str, Any]:
        return {"fired": list(self.fired)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.fired = list(state_dict["fired"])
