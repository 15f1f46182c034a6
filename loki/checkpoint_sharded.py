"""Distributed (FSDP2) checkpoints written so that a kill at any instant loses nothing.

Lightning's ``ModelParallelStrategy`` with ``save_distributed_checkpoint`` writes a checkpoint as
a folder: every rank's ``*.distcp`` shard, the ``.metadata`` index and Lightning's ``meta.pt``
(loops, callbacks, data state). It writes them into the checkpoint's own name, over the previous
save: ``last.ckpt`` is rewritten in place every ``every_n_train_steps``. A job killed during that
write (a node failure, a scheduler's kill after its grace period) can leave the new step's
shards, or only some ranks' of them, under the old step's ``.metadata`` index and ``meta.pt``.
DCP loads that without an error (the shards' layout does not change between steps): weights of
the new step, or of two steps across ranks, with the loops and data position of the old one.

:class:`AtomicModelParallelStrategy` writes each save into ``.loki-tmp-new-<name>.part`` beside
the target and moves it into place only once every rank's shards, the index and ``meta.pt`` are
on disk: the old folder is renamed to ``.loki-tmp-old-<name>.part``, the new one to ``<name>``,
and the old one is removed. A kill before the first rename leaves the old checkpoint; a kill
between the two renames leaves both folders complete, and :func:`finish_interrupted_swaps` (run
by ``loki fit`` before it looks for a checkpoint) puts the new one in place. ``LokiCLI`` adopts
this class for every ``ModelParallelStrategy`` that saves distributed checkpoints.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from lightning.pytorch.strategies import ModelParallelStrategy

from loki.atomic import TMP_PREFIX, TMP_SUFFIX, fsync_dir
from loki.checkpoint_read import LIGHTNING_META, is_complete_folder

log = logging.getLogger(__name__)

STAGED_PREFIX = f"{TMP_PREFIX}new-"
SET_ASIDE_PREFIX = f"{TMP_PREFIX}old-"


def staging_path(path: Path) -> Path:
    """Where a save of ``path`` is written before it is moved into place."""
    return path.with_name(f"{STAGED_PREFIX}{path.name}{TMP_SUFFIX}")


def set_aside_path(path: Path) -> Path:
    """Where the previous ``path`` waits while the new one is moved into place."""
    return path.with_name(f"{SET_ASIDE_PREFIX}{path.name}{TMP_SUFFIX}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def move_into_place(new: Path, path: Path) -> None:
    """Replace ``path`` (a folder, a file or nothing) by the complete folder ``new``."""
    old = set_aside_path(path)
    if path.exists() or path.is_symlink():
        if old.exists():  # left by an earlier failed move, and ``path`` is whole
            _remove(old)
        os.rename(path, old)
    os.rename(new, path)  # where ``path`` was missing, an ``old`` one goes only after this
    fsync_dir(path.parent)
    _remove(old)


def finish_interrupted_swaps(folder: str | os.PathLike) -> list[Path]:
    """Complete the moves a kill cut short between their two renames in ``folder``; returns the
    checkpoints put back in place. Safe to run on every rank at once, before any of them looks
    for a checkpoint (each rename is done once; the others find it done)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    restored = []
    for old in sorted(folder.glob(f"{SET_ASIDE_PREFIX}*{TMP_SUFFIX}")):
        target = folder / old.name[len(SET_ASIDE_PREFIX):-len(TMP_SUFFIX)]
        new = staging_path(target)
        if not target.exists():
            source = new if is_complete_folder(new) else old if is_complete_folder(old) else None
            if source is None:
                continue  # neither is complete: left for a person (and clean_stale) to judge
            try:
                os.rename(source, target)
                restored.append(target)
                log.warning("%s: put back in place the checkpoint a killed save had left as %s",
                            target, source.name)
            except FileNotFoundError:
                pass  # another rank moved it first
        if target.exists():
            _remove(old)
    if restored:
        fsync_dir(folder)
    return restored


class AtomicModelParallelStrategy(ModelParallelStrategy):
    """Lightning's ``ModelParallelStrategy`` (FSDP2) whose distributed checkpoints appear whole
    or not at all (see the module docstring). Saves of one consolidated file go through the
    trainer's ``CheckpointIO`` as before (``AtomicCheckpointIO`` under ``loki fit``)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: Any,
                        storage_options: Any | None = None) -> None:
        if not self._save_distributed_checkpoint or storage_options is not None:
            super().save_checkpoint(checkpoint, filepath, storage_options)
            return
        path = Path(self.broadcast(filepath))
        staged = staging_path(path)
        if self.global_rank == 0 and (staged.exists() or staged.is_symlink()):
            _remove(staged)  # a save of this name that failed earlier in this run
        self.barrier("AtomicModelParallelStrategy.stage")
        super().save_checkpoint(checkpoint, staged)  # every rank's shards, then meta.pt (rank 0)
        if self.global_rank == 0:
            _fsync(staged / LIGHTNING_META)
            fsync_dir(staged)
            move_into_place(staged, path)
        self.barrier("AtomicModelParallelStrategy.move")


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def adopt(strategy: Any) -> Any:
    """``strategy`` itself, made an :class:`AtomicModelParallelStrategy` when it is Lightning's
    plain ``ModelParallelStrategy`` (the subclass adds no state, only its ``save_checkpoint``)."""
    if type(strategy) is ModelParallelStrategy:
        strategy.__class__ = AtomicModelParallelStrategy
    return strategy

