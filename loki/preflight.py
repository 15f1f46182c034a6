"""Checks ``loki fit`` runs before anything touches the run folder.

A mistyped ``--ckpt_path``, a truncated checkpoint, an unwritable checkpoint folder or missing
shards must fail in one line before a logger, callback or checkpoint writes a byte, not after a
logger has started a new history or after hours of training (the first save). ``LokiCLI`` calls
``check_fit`` between building the trainer and ``trainer.fit`` (and ``loki.preflight_config``
before the model is built).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import torch

from loki.checkpoint_read import LIGHTNING_META, is_complete_folder
from loki.errors import LokiError
from loki.output import check_writable

# ckpt_path values Lightning resolves itself (no file to check here)
SPECIAL_CKPT = ("last", "best", "hpc", "registry")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _zip_ok(path: Path) -> bool:
    """True when ``path`` is a complete zip archive (what torch.save writes); reads only its
    central directory, so it is cheap on a large checkpoint."""
    try:
        with zipfile.ZipFile(path) as z:
            return bool(z.namelist())
    except (OSError, zipfile.BadZipFile, EOFError):
        return False


def is_complete(path: Path) -> bool:
    """Whether ``path`` is a whole checkpoint: a complete ``torch.save`` archive, or a
    distributed checkpoint folder with its index and ``meta.pt`` (cheap: reads no tensor)."""
    return is_complete_folder(path) if path.is_dir() else _zip_ok(path)


def _complete(folder: Path) -> list[Path]:
    """The complete ``*.ckpt`` files and distributed checkpoint folders in ``folder``, newest
    first."""
    if not folder.is_dir():
        return []
    found = sorted(folder.glob("*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
    return [p for p in found if is_complete(p)]


def last_good_checkpoint(folder: Path, exclude: Path | None = None) -> Path | None:
    """The newest complete ``*.ckpt`` in ``folder`` other than ``exclude``."""
    return next((p for p in _complete(folder)
                 if exclude is None or p.resolve() != exclude.resolve()), None)


def _hint(path: Path) -> str:
    """Where to look instead: the last good checkpoint beside ``path``; or, where checkpoints
    are kept there but none is complete, that; or, beside a file that no checkpoint sits next to
    (``--ckpt_path README.md``), where a run keeps its checkpoints."""
    folder = path.parent
    good = last_good_checkpoint(folder, exclude=path)
    if good is not None:
        return f"; the last good checkpoint in {folder} is {good}"
    if path.suffix == ".ckpt" or any(folder.glob("*.ckpt")):
        return (f"; there is no other complete checkpoint in "
                f"{'the current folder' if str(folder) == '.' else folder}")
    return "; a run's checkpoints are in its checkpoints folder: runs/<run>/checkpoints/last.ckpt"


def _load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, ...
        raise LokiError(f"checkpoint {path} cannot be read ({_first_line(err)}){_hint(path)}"
                        ) from None


def _weights_only(path: Path) -> str:
    good = next((c for c in _complete(path.parent) if c.resolve() != path.resolve()
                 and (c.is_dir() or "optimizer_states" in _load(c))), None)
    return (f"--ckpt_path {path} holds the model's weights only (no optimizer or loop state), "
            "so training cannot continue from it; use it with loki eval, loki compare or loki "
            "generate, and resume from a full checkpoint"
            + (f" such as {good}" if good else f" (there is none in {path.parent})"))


def _check_folder(p: Path) -> dict[str, Any]:
    """A distributed checkpoint is a folder with a ``.metadata`` file (and Lightning's
    ``meta.pt``: the loops, callbacks and data state); its strategy checks the shards."""
    if not any(p.iterdir()):
        raise LokiError(f"--ckpt_path {p} is an empty folder{_hint(p)}")
    if any(p.glob("*.distcp")) and not is_complete_folder(p):
        missing = ".metadata index" if not (p / ".metadata").is_file() else LIGHTNING_META
        raise LokiError(f"--ckpt_path {p} is an incomplete distributed checkpoint (shards without "
                        f"its {missing}: a save cut short, or a copy that left it out){_hint(p)}")
    if not (p / ".metadata").is_file():
        inside = sorted(c.name for c in p.glob("*.ckpt"))
        raise LokiError(f"--ckpt_path {p} is a folder, not a checkpoint (a distributed "
                        "checkpoint folder holds a .metadata file); "
                        + (f"pass one of the checkpoints inside: {', '.join(inside[:5])}"
                           + (f" (and {len(inside) - 5} more)" if len(inside) > 5 else "")
                           if inside else f"it holds no .ckpt file{_hint(p)}"))
    meta = p / LIGHTNING_META
    ckpt = _load(meta) if meta.is_file() else None
    if not isinstance(ckpt, dict):
        return {"global_step": None, "log_step": None, "checkpoint": None}
    return {"global_step": ckpt.get("global_step"), "log_step": resumed_log_step(ckpt),
            "checkpoint": ckpt}


def check_checkpoint(path: str | os.PathLike, model: Any | None = None,
                     resume: bool = False) -> dict[str, Any]:
    """Open ``path`` as a Lightning checkpoint of ``model`` without reading its tensors;
    ``resume``: ``loki fit`` continues training from it, so it must hold the optimizer and
    loop state, not the weights alone.

    Returns ``{"global_step", "log_step", "checkpoint"}`` (the last: the checkpoint's dict, its
    tensors memory-mapped, or a distributed checkpoint's ``meta.pt``; None when unknown);
    raises ``LokiError`` naming the file, what is wrong with it and the last good checkpoint
    beside it."""
    p = Path(path)
    if p.is_dir():
        return _check_folder(p)
    if not p.exists():
        near = last_good_checkpoint(p.parent) if p.parent.is_dir() else None
        raise LokiError(f"--ckpt_path {p} does not exist" + (
            f"; the last good checkpoint in {p.parent} is {near}" if near else
            "" if p.parent.is_dir() else f" (no folder {p.parent})"))
    if not os.access(p, os.R_OK):
        raise LokiError(f"--ckpt_path {p} is not readable; fix its permissions")
    if p.stat().st_size == 0:
        raise LokiError(f"checkpoint {p} is empty (0 bytes; an interrupted write){_hint(p)}")
    if not _zip_ok(p):
        raise LokiError(f"checkpoint {p} is truncated or not a checkpoint file (not a complete "
                        f"torch.save archive){_hint(p)}")
    ckpt = _load(p)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise LokiError(f"{p} is not a Lightning checkpoint (no state_dict); pass a .ckpt "
                        f"written by loki fit{_hint(p)}")
    if resume and "optimizer_states" not in ckpt:
        raise LokiError(_weights_only(p))
    if model is not None:
        _check_matches(p, ckpt["state_dict"], model)
    return {"global_step": ckpt.get("global_step"), "log_step": resumed_log_step(ckpt),
            "checkpoint": ckpt}


def resumed_log_step(ckpt: dict[str, Any]) -> int | None:
    """The logging step a run resumed from ``ckpt`` logs first: every row logged at or after
    it in the earlier run is work done again. Lightning saves ``_batches_that_stepped`` before
    counting the batch being trained and adds that one on restore when the save happened
    inside the batch (a step or validation checkpoint), not at the end of an epoch."""
    loops = ckpt.get("loops", {}).get("fit_loop", {})
    stepped = loops.get("epoch_loop.state_dict", {}).get("_batches_that_stepped")
    if stepped is None:
        return ckpt.get("global_step")
    total = loops.get("epoch_loop.batch_progress", {}).get("total", {})
    inside_batch = total.get("processed", 0) > total.get("completed", 0)
    return int(stepped) + int(inside_batch)


def logged_step(ckpt: dict[str, Any]) -> int | None:
    """The logging step of the rows the run logged when it saved ``ckpt`` (its last validation
    among them): where an evaluation of the checkpoint belongs in the run's history."""
    loops = ckpt.get("loops", {}).get("fit_loop", {})
    stepped = loops.get("epoch_loop.state_dict", {}).get("_batches_that_stepped")
    return ckpt.get("global_step") if stepped is None else int(stepped)


def _check_matches(path: Path, saved: dict[str, Any], model: Any) -> None:
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items() if k.startswith("model.")}
    theirs = {k: tuple(v.shape) for k, v in saved.items() if k.startswith("model.")}
    missing, extra = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
    if missing or extra:
        raise LokiError(f"checkpoint {path} is not of this model: "
                        + (f"{len(missing)} weights missing (e.g. {missing[0]})" if missing else "")
                        + ("; " if missing and extra else "")
                        + (f"{len(extra)} unexpected (e.g. {extra[0]})" if extra else "")
                        + "; check model.config against the run that wrote it")
    for k, shape in ours.items():
        if theirs[k] != shape:
            raise LokiError(f"checkpoint {path} is not of this model: {k} has shape "
                            f"{list(theirs[k])}, the model {list(shape)}; check model.config "
                            "and the data's tokenizer against the run that wrote it")


def run_folders(trainer: Any) -> list[tuple[str, str]]:
    """(what, folder) for every place this trainer's loggers and callbacks will write."""
    out: list[tuple[str, str]] = [("trainer.default_root_dir", trainer.default_root_dir)]
    for logger in trainer.loggers:
        folder = getattr(logger, "save_dir", None) or getattr(logger, "root_dir", None)
        if folder:
            out.append((f"{type(logger).__name__} folder", folder))
    for cb in trainer.callbacks:
        for attr in ("dirpath", "output_dir"):
            folder = getattr(cb, attr, None)
            if isinstance(folder, str | os.PathLike) and "://" not in str(folder):
                out.append((f"{type(cb).__name__} {attr}", str(folder)))
    return [(what, f) for what, f in out if "://" not in str(f)]


def check_fit(trainer: Any, model: Any, datamodule: Any, ckpt_path: str | None) -> dict | None:
    """All of the above for one ``loki fit``, and the checks of ``loki.preflight_run``; returns
    the checkpoint's steps (or None)."""
    from loki.preflight_run import check_data, check_distillation, check_finished, check_fresh

    info = None
    if ckpt_path is not None and str(ckpt_path) not in SPECIAL_CKPT and "://" not in str(
            ckpt_path):
        info = check_checkpoint(ckpt_path, model, resume=True)
    if trainer.is_global_zero:
        for what, folder in run_folders(trainer):
            check_writable(folder, what)
    if ckpt_path is None:
        check_fresh(trainer)
    checkpoint = (info or {}).get("checkpoint")
    check_finished(trainer, checkpoint)
    if datamodule is not None:
        check_data(trainer, datamodule, checkpoint)
    check_distillation(trainer, datamodule)
    return info
