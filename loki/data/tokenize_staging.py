"""The staging folder of ``loki tokenize``: made, swapped into the output, recovered after a kill.

A run builds its shard sets in ``<output>/.tokenize-<id>/``. Shard sets always sit in a
``sources/`` folder of their own, so that no source tag can meet the staging's other files::

    owner.json                             the run's pid, host and process start, written when it
                                           is made
    parts/<rank>/summary.json, error.txt   one task's counts, or its input error
    parts/<rank>/sources/<source>/         one task's shards and partial manifest
    sources/<source>/                      the merged set, swapped into <output>/<source>
    old/<source>/                          an earlier set while the new one takes its place
    logs/                                  datatrove's logging folder

A run that fails removes its staging itself. One killed outright (SIGKILL, power loss) leaves
it behind, possibly with an earlier set in ``old/`` and nothing in its place: the next run into
the same output finds it (``recover_staging``), puts such sets back and removes the folder.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

from loki.atomic import write_text
from loki.errors import LokiError

SOURCES = "sources"
PREFIX = ".tokenize-"
OWNER = "owner.json"


def make_staging(output: Path) -> Path:
    """A new staging folder in ``output``, owned by this process (``owner.json``)."""
    staging = Path(tempfile.mkdtemp(prefix=PREFIX, dir=output))
    pid = os.getpid()
    owner = {"pid": pid, "host": socket.gethostname(), "started": process_start(pid)}
    write_text(staging / OWNER, json.dumps(owner))
    return staging


def process_start(pid: int) -> str | None:
    """When process ``pid`` started, as ``<boot id>/<clock ticks after boot>``: with the pid it
    names one process for good, where the pid alone is handed to another process once its own
    has ended (or after a reboot). None where ``/proc`` does not say (not Linux, process gone)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces; start time is field 22
    return f"{boot}/{stat.rsplit(')', 1)[1].split()[19]}"


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


def put_back(staging: Path, output: Path) -> list[str]:
    """Move each earlier set in ``<staging>/old/`` whose place in ``output`` is empty back there;
    returns their sources.

    Such a set was moved aside whole and is the user's last complete output; the new set meant
    to replace it was written moments before, without fsync, so after a power loss it is not
    known to be whole, and a rerun writes it again anyway. A set in ``old/`` whose place is
    taken was being deleted when the run stopped and may be partial: it is left to go."""
    old = staging / "old"
    back = []
    for earlier in sorted(old.iterdir()) if old.is_dir() else []:
        dest = output / earlier.name
        if not dest.exists() and not dest.is_symlink():
            os.replace(earlier, dest)
            back.append(earlier.name)
    return back


def _in_use(staging: Path) -> str | None:
    """Why ``staging`` may belong to a run still going, or None when its run is gone."""
    try:
        owner = json.loads((staging / OWNER).read_text())
        pid, host = owner["pid"], owner["host"]
        if type(pid) is not int or pid < 1:  # os.kill(0 or -1) would ask about others
            raise ValueError(pid)
        if not isinstance(owner.get("started"), (str, type(None))):
            raise ValueError(owner["started"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"has no readable {OWNER} saying which run made it"
    if host != socket.gethostname():
        return f"was made by a run on host {host}"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, another user's process
        pass
    started = owner.get("started")
    if started is not None and process_start(pid) not in (started, None):
        return None  # the pid now names another process: the run that made the folder is gone
    return f"belongs to a run still going (pid {pid})"


class StagingInUse(LokiError):
    """A staging folder in the output that may belong to a run still going."""


def recover_staging(output: Path, log: Callable[[str], object]) -> None:
    """Remove the staging folders killed runs left in ``output``, first putting back the
    earlier sets they hold whose place is empty; one ``log`` line per folder. A folder that may
    belong to a run still going is refused, for all folders before any is touched."""
    folders = sorted(p for p in output.glob(f"{PREFIX}*") if p.is_dir() and not p.is_symlink())
    for folder in folders:
        if why := _in_use(folder):
            raise StagingInUse(f"{folder} {why}; remove it if no loki tokenize is using it, or "
                            "choose another --output (nothing was written)")
    for folder in folders:
        pid = json.loads((folder / OWNER).read_text())["pid"]
        back = put_back(folder, output)
        shutil.rmtree(folder)
        found = f"found {folder}, left by a run that was stopped (pid {pid})"
        if back:
            log(f"{found}; put its earlier {', '.join(back)} shards back into "
                f"{', '.join(str(output / s) for s in back)} and removed it")
        else:
            log(f"{found}, and removed it")
