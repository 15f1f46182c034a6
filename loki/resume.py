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


class ReplaceLastCheckpoint(L.Callback):
    """A resume replaces the run's ``last.ckpt``, also in a run folder moved or copied since the
    checkpoint was written. Lightning's ``ModelCheckpoint`` restores the name of the last file
    it wrote only when its folder's path is unchanged; otherwise it saves the resumed branch as
    ``last-v1.ckpt`` beside ``last.ckpt``, and a later ``--ckpt_path .../last.ckpt`` takes up the
    stale one. The ``last.ckpt`` found at train start is the resumed state or older (later ones
    are set aside), so it is the one to replace. Every rank, so that all agree on the name."""

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        from lightning.pytorch.callbacks import ModelCheckpoint

        for cb in trainer.checkpoint_callbacks:
            if not isinstance(cb, ModelCheckpoint) or not cb.save_last or cb.last_model_path:
                continue
            if not cb.dirpath or "://" in str(cb.dirpath) or "{" in cb.CHECKPOINT_NAME_LAST:
                continue
            last = os.path.join(cb.dirpath, cb.CHECKPOINT_NAME_LAST + cb.FILE_EXTENSION)
            if os.path.exists(last):
                cb.last_model_path = last


def checkpoints_newest_first(trainer: Any) -> list[tuple[Path, int | None]]:
    """Every checkpoint in the trainer's ModelCheckpoint folders with its step, the highest step
    first (``last.ckpt`` first on a tie); those whose step cannot be read come last."""
    found: list[tuple[int, int, Path]] = []
    for cb in trainer.checkpoint_callbacks:
        folder = Path(cb.dirpath) if getattr(cb, "dirpath", None) else None
        if folder is None or "://" in str(folder) or not folder.is_dir():
            continue
        for path in folder.glob("*.ckpt"):
            step = _step_of(path)
            found.append((-1 if step is None else step, path.name.startswith("last"), path))
    return [(path, None if step < 0 else step) for step, _, path in sorted(found, reverse=True)]


def newest_checkpoint(trainer: Any) -> tuple[Path, int | None] | None:
    """The checkpoint a resume would take up now: the complete one of the highest step in the
    trainer's ModelCheckpoint folders (``last.ckpt`` on a tie), with its step; None when there
    is none."""
    from loki.preflight import is_complete

    return next(((p, s) for p, s in checkpoints_newest_first(trainer) if is_complete(p)), None)


def _shown(path: Path) -> Path:
    """``path`` relative to the working folder when inside it, as a config names it."""
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path


def with_ckpt_path(args: list[str], ckpt_path: str | os.PathLike) -> list[str]:
    """``args`` with its ``--ckpt_path`` (either spelling) replaced by ``ckpt_path``."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--ckpt_path":
            skip = True
        elif not arg.startswith("--ckpt_path="):
            out.append(arg)
    return [*out, "--ckpt_path", str(ckpt_path)]


_interrupted = False  # set by ResumeHint: Lightning ends an interrupted fit with sys.exit(1)


def fit_was_interrupted() -> bool:
    """Whether a fit in this process ended with Ctrl-C (for callers of ``loki.cli.lightning_main``
    that see only Lightning's ``SystemExit``)."""
    return _interrupted


class ResumeHint(L.Callback):
    """The fit's closing line on rank 0: where the run ended and the newest checkpoint. After
    Ctrl-C (once Lightning's own shutdown has run) it also gives the command that resumes from
    there. A checkpoint is not written at the interrupt itself, which can come in the middle of
    an optimizer step: the steps since the newest checkpoint are lost (``every_n_train_steps``
    bounds them), unless ``ClusterSignals`` saved one at the step the ranks stopped at."""

    def __init__(self, args: list[str]) -> None:
        self.args = list(args)

    def on_fit_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        if not trainer.is_global_zero:
            return
        from loki.console import say

        newest = newest_checkpoint(trainer)
        where = "" if newest is None else f"; newest checkpoint {_shown(newest[0])}"
        say(f"fit done at step {trainer.global_step}{where}")

    def on_exception(self, trainer: L.Trainer, pl_module: Any, exception: BaseException) -> None:
        global _interrupted
        if not isinstance(exception, KeyboardInterrupt):
            return
        _interrupted = True
        if not trainer.is_global_zero:
            return
        import shlex

        from loki.console import say

        newest = newest_checkpoint(trainer)
        if newest is None:
            say(f"\ninterrupted at step {trainer.global_step}; no checkpoint was saved, so a new "
                "fit starts over")
            return
        path, step = newest
        path = _shown(path)
        kept = "" if step is None else f" (step {step})"
        say(f"\ninterrupted at step {trainer.global_step}; its newest checkpoint is {path}{kept}. "
            f"Resume with: {shlex.join(['loki', *with_ckpt_path(self.args, path)])}")
