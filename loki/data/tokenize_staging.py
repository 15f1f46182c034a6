"""The staging folder of ``loki tokenize`` and its swap into the output.

A run builds its shard sets in ``<output>/.tokenize-<id>/``. Shard sets always sit in a
``sources/`` folder of their own, so that no source tag can meet the staging's other files::

    parts/<rank>/summary.json, error.txt   one task's counts, or its input error
    parts/<rank>/sources/<source>/         one task's shards and partial manifest
    sources/<source>/                      the merged set, swapped into <output>/<source>
    old/<source>/                          an earlier set while the new one takes its place
    logs/                                  datatrove's logging folder
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from loki.errors import LokiError

SOURCES = "sources"


def _shard_file(name: str) -> bool:
    from loki.data.shards import MANIFEST

    return name == MANIFEST or name.endswith((".tokens", ".docs"))


def swap_in(staging: Path, output: Path, sources: list[str]) -> None:
    """Each new ``<staging>/sources/<source>`` replaces ``<output>/<source>``; the old set is
    deleted only once the new one is in place. A folder being replaced that holds anything but
    a shard set (someone's notes, other data) is refused, for all sources before any is moved."""
    for source in sources:
        dest = output / source
        foreign = sorted(p.name for p in dest.iterdir() if not _shard_file(p.name)) \
            if dest.is_dir() else []
        if foreign or (dest.exists() and not dest.is_dir()):
            raise LokiError(f"{dest} would be replaced by the new {source} shards but holds "
                            f"{', '.join(foreign[:3]) or 'a file of that name'}"
                            + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
                            + ", which are not token shards: move them out or choose another "
                            "--output (nothing was written)")
    (staging / "old").mkdir()
    for source in sources:
        dest = output / source
        old = staging / "old" / source
        if dest.exists():
            os.replace(dest, old)
        os.replace(staging / SOURCES / source, dest)
        shutil.rmtree(old, ignore_errors=True)
