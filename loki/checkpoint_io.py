"""``AtomicCheckpointIO``: Lightning checkpoints written with ``loki.atomic``, secrets redacted.

Lightning's ``TorchCheckpointIO`` serializes into memory and writes through an fsspec
transaction, whose local temp file lives in ``TMPDIR``; with ``TMPDIR`` on another filesystem
(tmpfs on most clusters) the final move is a copy, and a kill during it leaves ``last.ckpt``
empty or truncated, with the previous good one already gone. This plugin streams ``torch.save``
into a temp file in the checkpoint's own folder, fsyncs and renames it, so a kill at any instant
leaves the old checkpoint or the new one. ``LokiCLI`` installs it for every run; remote paths
(``s3://`` ...) keep Lightning's object-store upload.

The module's and the DataModule's hyper-parameters are redacted (``loki.redact``) on the way to
disk: a checkpoint is shared more widely than the config it came from.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.fabric.utilities.types import _PATH

from loki import atomic
from loki.redact import redact

HPARAM_KEYS = ("hyper_parameters", "datamodule_hyper_parameters")


def redacted_checkpoint(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """A shallow copy of ``checkpoint`` with its hyper-parameter sections redacted."""
    out = dict(checkpoint)
    for key in HPARAM_KEYS:
        if key in out:
            out[key] = redact(out[key])
    return out


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH,
                        storage_options: Any | None = None) -> None:
        checkpoint = redacted_checkpoint(checkpoint)
        if storage_options is not None or not _is_local_file_protocol(str(path)):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        with atomic.atomic_write(str(path), "wb") as f:
            torch.save(checkpoint, f)
