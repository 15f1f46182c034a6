"""Putting a running fit back on a rollback target (used by ``LossSpikeRollback``).

The target's parameters (bit-identical), optimizer state (also bitsandbytes 8-bit state) and
``tokens_seen`` (which sets the LR and batch-size warmup) come back; the DataModule gets the
target's stream state, minus the spike window's samples when they are to be skipped, then a new
order from the new seed, which also seeds the torch/numpy/python RNGs; the trainer's step
counters and data iterator go back too (``callbacks/trainer_rewind.py``).
"""

from __future__ import annotations

import copy
import random
from typing import Any

import lightning as L
import numpy as np
import torch

from callbacks.trainer_rewind import restart_train_data, retire_checkpoints_after, rewind_loops
from loki.snapshot import to_cpu


def restore(trainer: L.Trainer, pl_module: L.LightningModule, target: dict[str, Any],
            seed: int, skip: list[int] | None, retired_suffix: str) -> None:
    """Go back to the loaded ``target`` and reseed with ``seed``. ``skip``: the sample ids of the
    discarded steps, never served again (None: keep the target's consumed counters and only
    reseed). ``ModelCheckpoint`` files of the discarded steps get ``retired_suffix``."""
    spike_data = trainer.datamodule.state_dict()
    # 1. weights, optimizer (copies: the optimizer must never alias the snapshot), tokens
    pl_module.load_state_dict(target["state_dict"])
    for opt, state in zip(trainer.optimizers, target["optimizer_states"]):
        opt.load_state_dict(to_cpu(state))  # not deepcopy: it clones (torchao 8-bit)
        opt.zero_grad(set_to_none=True)
    pl_module.tokens_seen = int(target["tokens_seen"])
    # 2. data: the target's stream state, minus the spike window's samples, then a new order
    data = copy.deepcopy(target["datamodule"])
    if skip is not None:
        data["stream"]["consumed"] = copy.deepcopy(spike_data["stream"]["consumed"])
    trainer.datamodule.load_state_dict(data)
    if skip is not None and hasattr(trainer.datamodule, "skip_samples"):
        trainer.datamodule.skip_samples(skip)  # in later epochs too
    trainer.datamodule.reseed(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    # 3. the trainer's counters and the data iterator
    rewind_loops(trainer, target["step"])
    retire_checkpoints_after(trainer, target["step"], retired_suffix)
    restart_train_data(trainer)
