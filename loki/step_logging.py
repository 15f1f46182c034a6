"""How ``LokiLM`` logs a training step: each logged row holds what was measured at its step.

Lightning keeps every value a step logs with ``on_step=True`` and, at each logging step, sends
the last value of every key logged so far in the epoch, whether this step logged it or not. A
step logs by its kind (``train/loss`` on plain LM steps, ``train/distill_loss`` and ``distill/*``
on distillation steps), so a distillation step's row would repeat the previous LM step's loss
and an LM step's row the last distillation metrics. :func:`forget_previous_step` drops them.
"""

from __future__ import annotations

import lightning as L
import torch


def forget_previous_step(trainer: L.Trainer, fx: str = "training_step") -> None:
    """Stop Lightning re-sending the per-step values ``fx`` logged at an earlier step; call it
    before ``fx`` logs again. Values also reduced over the epoch (``on_epoch=True``) are kept, and
    so are the progress bar's and ``trainer.callback_metrics``' last values (plain dicts that
    Lightning updates, never clears, after each batch)."""
    results = getattr(trainer, "_results", None)  # the fit loop's ResultCollection
    for result in (results or {}).values():
        meta = result.meta
        if meta.fx == fx and meta.on_step and not meta.on_epoch:
            result.has_reset = True  # left out of the logged metrics until it is logged again


def host_scalar(value: float | int | torch.Tensor) -> torch.Tensor:
    """A number known on the host, as a CPU tensor for ``LightningModule.log``. Given a plain
    number, ``log`` makes a tensor of it on the module's device: a blocking host-to-GPU copy,
    every step, for every such metric. A CPU tensor stays where it is until the logger reads it.
    Pass numbers known on the host: ``float()`` of a GPU tensor would sync all the same."""
    return torch.tensor(float(value), dtype=torch.float32)
