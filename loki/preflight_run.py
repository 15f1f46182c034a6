"""Checks of one ``loki fit`` against its run folder and its inputs, before anything is written.

Everything here could otherwise refuse the run inside ``Trainer.fit``: after the loggers started
(a new wandb run, ``metrics.csv`` set aside), after ``config.yaml`` was saved. Each check is the
one the component itself makes later, called early, so the message is the same:

- a fresh fit into checkpoint folders that already hold a run's checkpoints (it would mix the
  two runs: ``last-v1.ckpt`` beside the old ``last.ckpt``, the old ``step-0.ckpt`` kept);
- the one-shot benchmark suite already run for this run (``OneShotBenchmarkEval.check_fit``);
- the distillation cache (``CandidateCache.open``, which checks its tokenizer too);
- the data: ``LokiDataModule.setup`` itself (mixture sources, batch sizes, block size against
  the shards, shard sizes, and the checksums its ``verify`` mode asks for, this rank's share),
  so the trainer's own ``setup`` finds the stream built and does not repeat the work;
- a resumed checkpoint's data layout (``LokiDataModule.check_resume``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from loki.errors import LokiError

# callback attributes that name where the callback writes
WRITE_ATTRS = ("dirpath", "path", "output_dir")


def _local(path: Any) -> bool:
    return isinstance(path, str | os.PathLike) and "://" not in str(path)


def checkpoint_folders(trainer: Any) -> list[Path]:
    """The folders this trainer's callbacks write checkpoints into: every ``dirpath`` set
    (ModelCheckpoint, LossSpikeRollback) and the folder of a ``path`` to a ``.ckpt`` file
    (InitialCheckpoint)."""
    out: list[Path] = []
    for cb in trainer.callbacks:
        dirpath, path = getattr(cb, "dirpath", None), getattr(cb, "path", None)
        if _local(dirpath):
            out.append(Path(dirpath))
        if _local(path) and str(path).endswith(".ckpt"):
            out.append(Path(path).parent)
    return list(dict.fromkeys(out))


def _checkpoints(folder: Path) -> list[Path]:
    from loki.atomic import is_temp

    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.ckpt") if not is_temp(p.name))


def _run_keys(trainer: Any, run: Path) -> list[str]:
    """The config keys whose paths lie in the run folder ``run`` (what to change to start a new
    run elsewhere)."""
    keys, root = [], run.resolve()
    named = [("trainer.default_root_dir", trainer.default_root_dir)]
    named += [(f"{type(lg).__name__} save_dir", getattr(lg, "save_dir", None))
              for lg in trainer.loggers]
    named += [(f"{type(cb).__name__} {attr}", getattr(cb, attr, None))
              for cb in trainer.callbacks for attr in WRITE_ATTRS]
    for what, path in named:
        if _local(path) and (root == Path(path).resolve()
                             or root in Path(path).resolve().parents):
            keys.append(what)
    return list(dict.fromkeys(keys))


def check_fresh(trainer: Any) -> None:
    """A fit without ``--ckpt_path`` must not start in folders that hold another run's
    checkpoints: refuse, naming the way to resume it and the keys that move a new run."""
    from loki.preflight import _zip_ok

    for folder in checkpoint_folders(trainer):
        found = _checkpoints(folder)
        if not found:
            continue
        names = ", ".join(p.name for p in found[:4]) + (", ..." if len(found) > 4 else "")
        last = folder / "last.ckpt"
        evaluated = next(filter(None, (cb.finished_run(trainer) for cb in trainer.callbacks
                                       if hasattr(cb, "finished_run"))), None)
        elsewhere = "start the new run in another folder"
        if evaluated is not None:  # a resume would be refused for the same reason
            advice = (f"that run is finished (its one-shot benchmark suite ran into "
                      f"{evaluated}), so {elsewhere}")
        elif last in found and _zip_ok(last):
            advice = f"resume it with --ckpt_path {last}, or {elsewhere}"
        else:
            advice = f"it has no last.ckpt to resume from; {elsewhere}"
        run = folder.parent
        keys = _run_keys(trainer, run)
        raise LokiError(
            f"{folder} already holds the checkpoints of a run ({names}) and this fit has no "
            f"--ckpt_path, so the two runs would mix; {advice} (move {run} aside, or change "
            f"the paths under {run} in the config: "
            f"{', '.join(keys) if keys else 'the checkpoint folders'})")


def check_finished(trainer: Any, checkpoint: dict | None) -> None:
    """The run is finished: its one-shot suite already ran (OneShotBenchmarkEval)."""
    saved = (checkpoint or {}).get("callbacks", {})
    for cb in trainer.callbacks:
        if hasattr(cb, "check_fit"):
            cb.check_fit(trainer, saved.get(cb.state_key))


def check_distillation(trainer: Any, datamodule: Any) -> None:
    """The distillation cache exists and was made with the data's tokenizer (checked after the
    data, whose absence is the first thing to fix)."""
    for cb in trainer.callbacks:
        cache = getattr(cb, "cache_path", None)  # TeacherDistillation
        if cache is not None:
            from loki.distill.cache import CandidateCache

            CandidateCache.open(cache, getattr(datamodule, "vocab_hash", None))


def check_data(trainer: Any, datamodule: Any, checkpoint: dict | None) -> None:
    """Build the data stream now (``LokiDataModule.setup``, on this rank's share) and check a
    resumed checkpoint's data state against it."""
    if not hasattr(datamodule, "check_resume"):
        return
    if getattr(datamodule, "corpus_files", None) and trainer.world_size > 1:
        return  # the corpus is tokenized by one process in fit's prepare_data; not here
    datamodule.distribute(trainer.global_rank, trainer.world_size)
    datamodule.setup("fit")
    state = (checkpoint or {}).get(type(datamodule).__qualname__)
    if state is not None:
        datamodule.check_resume(state)
