"""``InitialCheckpoint``: save the model as it is before the first optimizer step.

A score means little without the same score for the untrained model: ``loki compare`` between
this checkpoint and the final one shows, item by item, what training changed (the demo reports it
beside chance). Written once per run; a resumed run (``global_step > 0``) leaves it alone, and
an existing file is never overwritten. Nothing to save or restore in checkpoints.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback


class InitialCheckpoint(Callback):
    def __init__(self, path: str, weights_only: bool = True) -> None:
        """
        Args:
            path: checkpoint file to write (its folder is created).
            weights_only: save the model without optimizer state (a third of the size).
        """
        self.path = Path(path)
        self.weights_only = weights_only

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step == 0 and not self.path.exists():
            trainer.save_checkpoint(self.path, weights_only=self.weights_only)
