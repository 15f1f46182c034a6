"""Output folders: rejected with a one-line error before any work when they cannot be written."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from loki.errors import LokiError


def check_writable(folder: str | os.PathLike, what: str = "output folder") -> None:
    """One-line LokiError unless ``folder`` exists and takes new files, or can be created there;
    probes with a temp file and changes nothing on disk."""
    p = Path(folder).absolute()
    probe = p
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise LokiError(f"{what} {p}: {probe} is a file, not a folder; choose another path")
    try:
        fd, name = tempfile.mkstemp(prefix=".loki-write-probe-", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as err:
        raise LokiError(f"{what} {p} is not writable ({err.strerror or err} in {probe}); "
                        "choose a folder you can write to or fix its permissions") from None
