"""Publishing: the filter's last job puts the final stage's complete set of shards in output_dir.

The final stage writes its shards into ``<work>/stages/09_<stage>``, never into output_dir, so a
killed run cannot leave a truncated shard there and an earlier output stays whole until the new
one is complete. ``PublishOutput`` is a job of its own (one task), so a Slurm chain runs it too:

- local output_dir: the new set is assembled in ``<output_dir>.partial`` (hard links to the staged
  shards, copies across filesystems), the old output_dir is renamed to ``<output_dir>.previous``,
  the new one renamed in, and the old one deleted. Running the job again after a crash at any
  step finishes the swap; a rerun with fewer tasks leaves no old shard beside the new ones.
- fsspec URL: every new shard is copied (each object appears whole), then the old shards that are
  not in the new set are deleted.

The report is written after publishing. Since the whole folder is replaced, a local output_dir
may hold only what the filter writes there (checked before the run starts).
"""

from __future__ import annotations

import os
import re
import shutil

from datatrove.io import get_datafolder
from datatrove.pipeline.base import PipelineStep

from loki.atomic import is_temp
from loki.errors import LokiError

SHARD = re.compile(r"^\d{5}\.jsonl\.gz$")
REPORTS = ("filter_report.json", "filter_report.md")


def foreign_entries(output_dir: str) -> list[str]:
    """Names in a local output_dir that the filter did not write there (shards, reports)."""
    if "://" in output_dir or not os.path.isdir(output_dir):
        return []
    return sorted(n for n in os.listdir(output_dir)
                  if not (SHARD.match(n) or n in REPORTS or is_temp(n)))


def check_output_dir(output_dir: str) -> None:
    """One-line LokiError when publishing would replace files the filter did not write."""
    if "://" not in output_dir and os.path.lexists(output_dir) and not os.path.isdir(output_dir):
        raise LokiError(f"output_dir {output_dir} is a file; name a folder")
    foreign = foreign_entries(output_dir)
    if not foreign:
        return
    hint = (" (_work is an earlier version's default work_dir: move it to <output_dir>.work to "
            "reuse it, or delete it)" if "_work" in foreign else "")
    raise LokiError(f"output_dir {output_dir} holds files the filter did not write "
                    f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}){hint}; the "
                    "filter replaces the whole folder: choose a new or filter-only output_dir")


def publish_local(staging: str, output_dir: str, shards: list[str]) -> None:
    out = os.path.abspath(output_dir)
    partial, previous = f"{out}.partial", f"{out}.previous"
    if os.path.isdir(previous) and os.path.isdir(out):
        shutil.rmtree(previous)  # the last publish swapped the new set in, then stopped
    shutil.rmtree(partial, ignore_errors=True)  # an unfinished assembly: start it again
    os.makedirs(partial)
    for name in shards:
        _link_or_copy(staging, name, os.path.join(partial, name))
    if os.path.isdir(out):
        os.replace(out, previous)
    # from here to the rename below output_dir is absent; a rerun finds .previous and goes on
    os.replace(partial, out)
    shutil.rmtree(previous, ignore_errors=True)


def _link_or_copy(staging: str, name: str, dest: str) -> None:
    if "://" not in staging:
        try:
            os.link(os.path.join(staging, name), dest)  # no copy of a terabyte-sized output
            return
        except OSError:
            pass  # another filesystem, or no hard links there
    with get_datafolder(staging).open(name, "rb") as src, open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 24)


def publish_remote(staging: str, output_dir: str, shards: list[str]) -> None:
    src, dst = get_datafolder(staging), get_datafolder(output_dir)
    for name in shards:
        with src.open(name, "rb") as fin, dst.open(name, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 24)
    new = set(shards)
    for name in dst.list_files(recursive=False):
        if SHARD.match(name) and name not in new:
            dst.rm(name)


class PublishOutput(PipelineStep):
    """One task: makes output_dir hold exactly the shards the final stage staged."""

    type = "📦 - PUBLISH"
    name = "publish output"

    def __init__(self, staging: str, output_dir: str):
        super().__init__()
        self.staging, self.output_dir = staging.rstrip("/"), output_dir.rstrip("/")

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        shards = sorted(n for n in get_datafolder(self.staging).list_files(recursive=False)
                        if SHARD.match(n))
        if not shards:  # an empty set would replace a good earlier output with nothing
            raise LokiError(f"the final stage kept no documents: nothing published, "
                            f"{self.output_dir} is left as it was")
        if "://" in self.output_dir:
            publish_remote(self.staging, self.output_dir, shards)
        else:
            publish_local(self.staging, self.output_dir, shards)
        self.stat_update("shards_published", value=len(shards))
        yield from ()
