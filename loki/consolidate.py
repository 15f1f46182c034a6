"""``loki consolidate``: a distributed checkpoint folder (FSDP2, ``*.distcp`` + ``meta.pt``) merged
into one ``.ckpt`` file that the other tools and notebooks read."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from loki import atomic
from loki.checkpoint_read import (
    check_distributed,
    inspect_checkpoint,
    one_line_reason,
    resolve_checkpoint,
)
from loki.errors import LokiError
from loki.output import check_writable


def consolidate(checkpoint: str | Path, output: str | Path, keep_optimizer: bool = False) -> Path:
    """Merge a Lightning distributed checkpoint folder (``*.distcp`` + ``meta.pt``) into one
    ``.ckpt`` that ``LokiLM.load_from_checkpoint`` and ``loki.module.load_model`` read.

    Runs in one process without a process group. Optimizer state is dropped unless asked for
    (the file is for inspection and evaluation; resume from the folder itself). The output is
    written atomically (``loki.atomic``): an earlier file there stays whole until the new one is;
    the intermediate file of the merge gets a unique temp name beside it and is always removed."""
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    src, dst = resolve_checkpoint(checkpoint), Path(output)
    if src.is_file():
        inspect_checkpoint(src)  # a file that is no checkpoint at all is refused as such
        raise LokiError(f"{src} is already a single checkpoint file: use it as is (generate, "
                        "probe, compare, eval and export read it); there is nothing to consolidate")
    meta = check_distributed(src)
    if dst.is_dir():
        raise LokiError(f"--output {dst} is a folder; give a file name such as last.ckpt")
    check_writable(dst.parent, f"--output {dst}: its folder")
    work = dst.absolute().parent  # the merge's intermediate file: in the output's folder, or
    while not work.exists():      # the nearest one that exists, so a failure creates no folders
        work = work.parent
    fd, tmp = tempfile.mkstemp(prefix=f"{atomic.TMP_PREFIX}{dst.name}.", suffix=atomic.TMP_SUFFIX,
                               dir=work)
    os.close(fd)
    try:
        dcp_to_torch_save(src, tmp)
        tensors = torch.load(tmp, map_location="cpu", weights_only=False)
    except (Exception, CheckpointException) as err:  # a truncated or missing shard; torch's
        # CheckpointException is a BaseException that carries each rank's traceback as text
        raise LokiError(f"cannot read the distributed checkpoint {src}: "
                        f"{one_line_reason(err)}") from err
    finally:
        Path(tmp).unlink(missing_ok=True)
    merged = dict(meta)
    merged["state_dict"] = {k: _plain(v) for k, v in tensors.pop("state_dict").items()}
    if keep_optimizer:
        merged["optimizer_states"] = [
            tensors[k] for k in sorted(tensors) if k.startswith("optimizer_")
        ]
    try:
        with atomic.atomic_write(dst) as f:
            torch.save(merged, f)
    except RuntimeError as err:  # torch's writer reports a full disk as a RuntimeError
        raise LokiError(f"cannot write {dst}: {one_line_reason(err)}") from err
    return dst


def _plain(value: Any) -> Any:
    return value.detach().clone() if torch.is_tensor(value) else value


def main(argv: list[str] | None = None) -> None:
    """``loki consolidate CHECKPOINT_DIR --output FILE.ckpt``."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(prog="loki consolidate", description=(
        "Merge a Lightning distributed checkpoint folder (*.distcp shards and meta.pt) into one "
        ".ckpt file that the other tools (generate, probe, compare, export) and "
        "LokiLM.load_from_checkpoint read. Runs in one process, without GPUs. The optimizer state "
        "is left out unless --keep_optimizer true; to resume training, use the folder itself."))
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_argument("checkpoint", type=str,
                        help="distributed checkpoint folder (*.distcp), or a run folder whose "
                             "checkpoints/last.ckpt is one")
    parser.add_argument("--output", type=str | None, default=None,
                        help="output file (default: <checkpoint>.consolidated.ckpt beside it)")
    parser.add_argument("--keep_optimizer", type=bool, default=False,
                        help="also keep the optimizer state (large; not needed for eval)")
    args = parser.parse_args(argv)
    src = resolve_checkpoint(args.checkpoint)  # a run folder: its last checkpoint
    output = Path(args.output) if args.output else src.with_name(src.name + ".consolidated.ckpt")
    dst = consolidate(src, output, args.keep_optimizer)
    print(f"wrote {dst} ({dst.stat().st_size / 2**20:.1f} MiB)")
