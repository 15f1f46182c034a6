"""What a resume from an earlier step does to the run's checkpoint folders.

Resuming from a checkpoint older than the run's newest (an earlier step, a rollback target)
replaces the steps after it, as ``ResumableCSVLogger`` sets their metric rows aside. Their
checkpoints are set aside the same way: left in place, ``last.ckpt`` among them, Lightning's
``ModelCheckpoint`` would write the new branch beside them as ``last-v1.ckpt``, and a later
``--ckpt_path .../last.ckpt`` (or an export of the run folder) would take up the replaced branch.
They are set aside when the first step of the new branch starts, not before: a fit refused or
failed before training leaves the folder as it was.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import lightning as L

from loki.errors import LokiError


def _step_of(path: Path) -> int | None:
    """The global step a checkpoint in a ModelCheckpoint folder was saved at: from its name
    (``...step=12...``), else (``last.ckpt``, a distributed folder) from the checkpoint itself,
    read without its tensors; None when it cannot be read (left alone)."""
    from loki.preflight import check_checkpoint

    found = re.search(r"step=(\d+)", path.name)
    if found:
        return int(found.group(1))
    try:
        return check_checkpoint(path).get("global_step")
    except LokiError:
        return None


def set_aside_later_checkpoints(trainer: Any, step: int, resumed_from: str | os.PathLike
                                ) -> list[Path]:
    """Rename every checkpoint saved after ``step`` in the trainer's ModelCheckpoint folders to
    ``<name>.replaced-<UTC time>`` (kept, never resumed from by name); returns the new paths.
    The checkpoint resumed from stays as it is."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    resumed = Path(resumed_from).resolve()
    moved: list[Path] = []
    for cb in trainer.checkpoint_callbacks:
        folder = Path(cb.dirpath) if getattr(cb, "dirpath", None) else None
        if folder is None or "://" in str(folder) or not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.ckpt")):
            later = _step_of(path)
            if path.resolve() != resumed and later is not None and later > step:
                target = path.with_name(f"{path.name}.replaced-{stamp}")
                os.replace(path, target)
                moved.append(target)
    return moved


class SetAsideReplacedCheckpoints(L.Callback):
    """Calls :func:`set_aside_later_checkpoints` once, on rank 0, when the first training batch
    of a resume starts (before the new branch can save a checkpoint), and says what it moved."""

    def __init__(self, step: int, resumed_from: str | os.PathLike) -> None:
        self.step, self.resumed_from, self.done = step, resumed_from, False

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if self.done:
            return
        self.done = True
        if not trainer.is_global_zero:
            return
        from loki.console import say

        moved = set_aside_later_checkpoints(trainer, self.step, self.resumed_from)
        if moved:
            say(f"resuming at step {self.step}: the checkpoints of the steps it replaces are "
                f"set aside as {', '.join(p.name for p in moved)}")
