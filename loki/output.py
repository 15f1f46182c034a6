"""Output folders: rejected with a one-line error before any work when they cannot be written."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from loki.errors import LokiError


def check_writable(folder: str | Path) -> None:
    """One-line LokiError unless ``folder`` can be created and written; changes nothing on disk."""
    folder = Path(folder)
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise LokiError(f"output folder {folder} cannot be created: {existing} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".loki-write-probe-")
    except OSError as err:
        raise LokiError(f"output folder {folder} is not writable ({err.strerror}: {existing})"
                        ) from err
    os.close(fd)
    os.unlink(probe)
