"""Atomic file writes: a kill at any instant leaves either the old file or the new one.

The one place that writes outputs the safe way: a temp file *in the destination folder* (so the
final rename never crosses a filesystem; ``TMPDIR`` on tmpfs would turn it into a copy that a
kill can cut short), flushed and fsynced, then ``os.replace``d over the target, then the folder
fsynced so the rename itself survives a crash. Temp files carry a fixed prefix and suffix so
that a later start can find and remove the ones a kill left behind (``clean_stale``).

A write that finds no room (a full disk, a quota, a file-size limit) raises :class:`NoRoomError`,
a ``LokiError`` that is also an ``OSError``: ``loki`` prints it on one line, and the target is
left as it was. :func:`write_all` writes several files as one: all or none of them change.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from loki.errors import LokiError

log = logging.getLogger(__name__)

TMP_PREFIX = ".loki-tmp-"
TMP_SUFFIX = ".part"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; a finished output gets the mode a plain open() would give it
_FILE_MODE = 0o666 & ~_umask()


def give_usual_mode(paths: Iterable[str | Path]) -> None:
    """Give files another library wrote through a temp file of its own the mode a plain
    ``open(path, "w")`` gives under the umask (safetensors' ``save_file``, behind transformers'
    ``save_pretrained``, leaves ``model.safetensors`` at mkstemp's 0600: unreadable to the other
    users of shared storage)."""
    for path in paths:
        os.chmod(path, _FILE_MODE)


def fsync_dir(folder: str | Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class NoRoomError(LokiError, OSError):
    """A write found no room; the file it was to replace is left as it was."""


@contextlib.contextmanager
def _no_room_is_one_line(path: Path, kept: str) -> Iterator[None]:
    try:
        yield
    except NoRoomError:
        raise
    except OSError as err:
        if err.errno not in _NO_ROOM:
            raise
        raise NoRoomError(err.errno, f"{err.strerror}; {kept}", str(path)) from err


@contextlib.contextmanager
def _temp_beside(path: Path, mode: str, **open_kwargs) -> Iterator[tuple[IO, str]]:
    """A temp file in ``path``'s folder, flushed and fsynced on a clean exit; removed on an
    exception."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}.", suffix=TMP_SUFFIX,
                               dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f, tmp
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", **open_kwargs) -> Iterator[IO]:
    """Open a temp file beside ``path``; on a clean exit it replaces ``path`` atomically.

    On an exception the temp file is removed and ``path`` is untouched."""
    path = Path(path)
    with _no_room_is_one_line(path, f"{path.name} is left as it was"):
        with _temp_beside(path, mode, **open_kwargs) as (f, tmp):
            yield f
        os.replace(tmp, path)
    fsync_dir(path.parent)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_write(path, "wb") as f:
        f.write(data)


def write_text(path: str | Path, text: str) -> None:
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_all(files: dict[str | Path, str | bytes]) -> None:
    """Write several files as one: every content goes to a temp file beside its target first,
    and only once all are on disk are they renamed over their targets, in the order given (put
    a file that vouches for the others, a marker, last). A write that fails leaves every target
    as it was."""
    staged: list[tuple[str, Path]] = []
    names = ", ".join(Path(p).name for p in files)
    try:
        for path, data in files.items():
            path = Path(path)
            with _no_room_is_one_line(path, f"{names} are left as they were"):
                with _temp_beside(path, "wb" if isinstance(data, bytes) else "w",
                                  **({} if isinstance(data, bytes) else {"encoding": "utf-8"})
                                  ) as (f, tmp):
                    staged.append((tmp, path))
                    f.write(data)
    except BaseException:
        for tmp, _ in staged:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
    for tmp, path in staged:
        os.replace(tmp, path)
    for folder in {path.parent for _, path in staged}:
        fsync_dir(folder)


def temp_dir_beside(path: str | Path, label: str) -> Path:
    """A new, empty, uniquely named folder beside ``path`` (``<name>.<label>-XXXXXXXX``) for
    staging a folder output, with the mode a plain mkdir would give it. Its name is this call's
    own, so removing it never removes anything a user made."""
    path = Path(path)
    folder = Path(tempfile.mkdtemp(prefix=f"{path.name}.{label}-", dir=path.parent))
    os.chmod(folder, 0o777 & ~_umask())  # mkdtemp makes 0700 folders
    return folder


def is_temp(name: str) -> bool:
    """True for a temp file name ``atomic_write`` makes."""
    return name.startswith(TMP_PREFIX) and name.endswith(TMP_SUFFIX)


def clean_stale(folder: str | Path, patterns: tuple[str, ...] = ()) -> list[Path]:
    """Remove the temp files (and staged folders) an earlier killed writer left in ``folder``,
    and files matching ``patterns`` (e.g. ``rollback-*.ckpt.tmp``); returns what was removed.

    Only call it where no other process is writing into ``folder`` at the same time (at the
    start of a run, on rank 0)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir() if is_temp(p.name)]
    for pattern in patterns:
        stale += [p for p in folder.glob(pattern) if p not in stale]
    removed = []
    for p in stale:
        try:
            if p.is_dir() and not p.is_symlink():  # a staged checkpoint folder
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
        except OSError:
            continue
    if removed:
        log.warning("removed %d stale temp file(s) from an interrupted write in %s: %s",
                    len(removed), folder, ", ".join(p.name for p in removed))
    return removed
