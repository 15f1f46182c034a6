"""Put a running ``Trainer`` back to an earlier optimizer step (used by ``LossSpikeRollback``).

These reach into Lightning's loop state (progress trackers, ``ModelCheckpoint``'s last saved
step, the fit loop's data fetcher): the one place in the project that does, kept together so
that a Lightning upgrade has one file to check.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import lightning as L

log = logging.getLogger(__name__)


def rewind_loops(trainer: L.Trainer, step: int) -> None:
    """Put Lightning's counters back to where they were at the end of step ``step``.

    ``global_step`` under manual optimization is ``optim_step_progress.total.completed``; batch
    progress moves with it (one batch is one optimizer step). ``_batches_that_stepped`` (the
    loggers' step axis) goes back by the same count in :func:`rewind_log_step`, once the step
    being rolled back has logged its row."""
    loop = trainer.fit_loop.epoch_loop
    delta = trainer.global_step - step
    progress = loop.manual_optimization.optim_step_progress
    for tracker in (progress.total, progress.current, loop.batch_progress.total,
                    loop.batch_progress.current):
        for name in ("ready", "started", "processed", "completed"):
            if hasattr(tracker, name):
                setattr(tracker, name, max(0, getattr(tracker, name) - delta))


def rewind_log_step(trainer: L.Trainer, steps: int) -> None:
    """Put the loggers' step axis ``steps`` back, after :func:`rewind_loops` rewound the
    optimizer steps by as many: rows are then logged at the steps an uninterrupted run logs
    them (step s at s - 1, its validation too), so the replayed steps line up with a run
    without the spike and the discarded ones keep their own steps. Call it after the rolled-back
    step's own row (Lightning logs it after ``on_train_batch_end``, at the axis as it was) and
    before anything else logs: the next batch's start, a validation start or the epoch end."""
    loop = trainer.fit_loop.epoch_loop
    loop._batches_that_stepped = max(0, loop._batches_that_stepped - steps)


def retire_checkpoints_after(trainer: L.Trainer, step: int, suffix: str) -> None:
    """Steps replayed after a rewind are new training (restored weights, new order), so they
    checkpoint and validate again like any step. ``ModelCheckpoint``'s "this step is saved" mark
    goes back to ``step`` (else a spike right after a checkpoint step would keep the discarded
    file as that step's checkpoint), and its files of the steps after ``step`` are renamed
    ``<name>.<suffix>``: kept for inspection, never resumed from by name, never beside a replayed
    ``-v1`` copy. Validation needs nothing: the rewound batch progress brings its checks back;
    loggers record them at their steps (:func:`rewind_log_step`)."""
    for cb in trainer.checkpoint_callbacks:
        if getattr(cb, "_last_global_step_saved", -1) > step:
            cb._last_global_step_saved = step
        folder = Path(cb.dirpath) if getattr(cb, "dirpath", None) else None
        if not (trainer.is_global_zero and folder and folder.is_dir()):
            continue
        for path in sorted(folder.iterdir()):
            found = re.search(r"step=(\d+)", path.name)
            if found and int(found.group(1)) > step and ".discarded" not in path.name:
                retired = path.with_name(f"{path.name}.{suffix}")
                os.replace(path, retired)
                cb.best_k_models.pop(str(path), None)
                log.warning("rollback: checkpoint %s is from the discarded steps; renamed %s",
                            path.name, retired.name)
    trainer.strategy.barrier("LossSpikeRollback.replay")


def restart_train_data(trainer: L.Trainer) -> None:
    """A fresh iterator over the train loader: it (and fresh workers) starts from the restored
    DataModule state; the batch already prefetched is dropped unused."""
    fetcher = trainer.fit_loop._data_fetcher
    if fetcher is not None:
        iter(fetcher)
