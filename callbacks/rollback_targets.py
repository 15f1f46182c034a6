"""The states ``LossSpikeRollback`` can go back to: in-memory snapshots and on-disk checkpoints.

A target is a dict with ``kind`` ("memory" or "disk"), ``step`` and ``normal`` (later normal LM
losses seen so far). A loaded target (a snapshot, or a checkpoint read back by
``load_checkpoint``) also holds what a rollback restores: ``state_dict``, ``optimizer_states``,
``tokens_seen``, ``datamodule`` and ``detector`` (the spike detector's statistics, or None).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch

from loki.snapshot import to_cpu

log = logging.getLogger(__name__)
REQUIRED_KEYS = ("state_dict", "optimizer_states", "global_step", "loki")


def take_snapshot(trainer: L.Trainer, pl_module: L.LightningModule, step: int,
                  detector: dict[str, Any]) -> dict[str, Any]:
    """CPU copies of model and optimizer state, tokens seen and the DataModule state."""
    return {
        "kind": "memory", "step": step, "normal": 0,
        "state_dict": to_cpu(pl_module.state_dict()),
        "optimizer_states": [to_cpu(o.state_dict()) for o in trainer.optimizers],
        "tokens_seen": int(pl_module.tokens_seen),
        "datamodule": to_cpu(trainer.datamodule.state_dict()),
        "detector": detector,
    }


def write_checkpoint(trainer: L.Trainer, dirpath: str, step: int, count: int) -> dict[str, Any]:
    """Write to ``<name>.tmp`` and rename: a killed writer leaves only a ``.tmp`` that no
    rollback ever looks at, and no good file is ever overwritten (names carry the count)."""
    final = Path(dirpath) / f"rollback-step={step:08d}-r{count}.ckpt"
    tmp = final.with_name(final.name + ".tmp")
    trainer.save_checkpoint(tmp)  # collective: every rank calls it, rank 0 writes
    if trainer.is_global_zero:
        os.replace(tmp, final)
    trainer.strategy.barrier("LossSpikeRollback.write")
    return {"kind": "disk", "step": step, "normal": 0, "path": str(final)}


def discard(trainer: L.Trainer, target: dict[str, Any]) -> None:
    """Forget a target; an on-disk one is deleted (by rank 0)."""
    if "path" in target and trainer.is_global_zero:
        Path(target["path"]).unlink(missing_ok=True)


def load_checkpoint(path: str, trainer: L.Trainer, state_key: str) -> dict[str, Any] | None:
    """The checkpoint as a loaded target if it loads and holds what a rollback restores, else
    None. ``state_key`` names the callback state that holds the detector's statistics."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # truncated, half-written, deleted: never used
        log.warning("rollback checkpoint %s is unreadable (%s); not using it", path, err)
        return None
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    dm_key = type(trainer.datamodule).__qualname__
    if dm_key not in ckpt:
        missing.append(dm_key)
    if missing:
        log.warning("rollback checkpoint %s lacks %s; not using it", path, missing)
        return None
    own = ckpt.get("callbacks", {}).get(state_key, {})
    return {"kind": "disk", "step": int(ckpt["global_step"]), "path": path,
            "state_dict": ckpt["state_dict"], "optimizer_states": ckpt["optimizer_states"],
            "tokens_seen": int(ckpt["loki"]["tokens_seen"]), "datamodule": ckpt[dm_key],
            "detector": own.get("detector")}
