"""Token shards: what ``loki tokenize`` writes and ``LokiDataModule`` streams.

One folder per source (``web``, ``synthetic``, ...)::

    <folder>/manifest.json            format, source tag, tokenizer (vocab_hash, vocab_size,
                                      eot_id), dtype, totals, and per shard: file names, token
                                      and document counts, sha256 of both files
    <folder>/<source>-00000.tokens    the token stream, raw little-endian uint16 (vocabulary
                                      < 65,536) or uint32; every document ends with end-of-text
    <folder>/<source>-00000.docs      uint64 document start offsets, documents + 1 entries

Raw arrays (not ``.npy``) so that a byte range of a remote file is a token range: remote shards
(``s3://``, ``gs://``, ``hf://``, any fsspec URL) are read by ranges, or copied shard by shard
into a bounded local cache (``remote="cache"``); the whole corpus is never downloaded at once.
Local shards are read with ``pread`` (no mapping), so memory does not grow with the corpus.

Every problem (missing or unreadable file, truncated shard, checksum mismatch, tokenizer
mismatch) raises ``LokiError`` naming the file; nothing is skipped. This module holds the format
and the reading; ``loki.data.shard_writer.ShardWriter`` writes it.
"""

from __future__ import annotations

import glob as globlib
import hashlib
import json
import os
import shutil
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from loki.errors import LokiError

FORMAT = "loki-token-shards"
VERSION = 1
MANIFEST = "manifest.json"
Verify = Literal["full", "size"]
Remote = Literal["range", "cache"]


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (the pruned 32k vocabulary), else uint32 (cl100k_base)."""
    return np.dtype("<u2") if vocab_size <= 65536 else np.dtype("<u4")


def is_url(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


def _local(location: str) -> str:
    return location.removeprefix("file://")


def _join(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}" if is_url(base) else str(Path(base) / name)


def _fs(url: str):
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as err:
        raise LokiError(f"cannot open {url}: {err} (is the fsspec backend installed?)") from err


def _sha256_file(path: str, fs=None) -> str:
    h = hashlib.sha256()
    opener = fs.open(path, "rb") if fs is not None else open(path, "rb")
    with opener as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- reading
def expand_locations(locations: Iterable[str]) -> list[str]:
    """Manifest locations from folders, manifest paths, globs and URLs (sorted, de-duplicated).

    An entry may name a shard folder, its ``manifest.json``, or a glob over either."""
    found: list[str] = []
    for loc in locations:
        loc = str(loc)
        if any(ch in loc for ch in "*?["):
            if is_url(loc):
                fs, _ = _fs(loc)
                protocol = loc.split("://", 1)[0]
                matches = [f"{protocol}://{m}" for m in sorted(fs.glob(loc.split("://", 1)[1]))]
            else:
                matches = sorted(globlib.glob(_local(loc)))
            if not matches:
                raise LokiError(f"no token shards match {loc}")
            found += matches
        else:
            found.append(loc)
    out = []
    for loc in found:
        loc = loc if is_url(loc) else _local(loc)
        loc = loc if loc.endswith(".json") else _join(loc, MANIFEST)
        if loc not in out:
            out.append(loc)
    return out


@dataclass
class TokenShardSet:
    """One manifest: a source's shards, with sizes checked and files opened lazily."""

    manifest_path: str
    manifest: dict
    readers: dict[int, ShardReader] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, location: str) -> TokenShardSet:
        path = expand_locations([location])[0]
        try:
            if is_url(path):
                fs, p = _fs(path)
                with fs.open(p, "r") as f:
                    text = f.read()
            else:
                text = Path(path).read_text()
        except FileNotFoundError as err:
            raise LokiError(f"token shard manifest not found: {path}") from err
        except OSError as err:
            raise LokiError(f"cannot read token shard manifest {path}: {err}") from err
        except Exception as err:  # fsspec backends raise their own types (auth, network)
            raise LokiError(f"cannot read token shard manifest {path}: {err}") from err
        try:
            manifest = json.loads(text)
        except json.JSONDecodeError as err:
            raise LokiError(f"{path} is not valid JSON: {err}") from err
        if manifest.get("format") != FORMAT:
            raise LokiError(f"{path} is not a {FORMAT} manifest (write it with `loki tokenize`)")
        if not manifest.get("shards"):
            raise LokiError(f"{path} lists no shards")
        return cls(path, manifest)

    @property
    def folder(self) -> str:
        return self.manifest_path.rsplit("/", 1)[0] if is_url(self.manifest_path) else str(
            Path(self.manifest_path).parent)

    @property
    def source(self) -> str:
        return self.manifest["source"]

    @property
    def vocab_hash(self) -> str:
        return self.manifest["tokenizer"]["vocab_hash"]

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.manifest["dtype"])

    @property
    def shard_tokens(self) -> list[int]:
        return [int(s["num_tokens"]) for s in self.manifest["shards"]]

    def path(self, i: int, kind: str = "tokens") -> str:
        return _join(self.folder, self.manifest["shards"][i][kind])

    def check(self, verify: Verify = "size", only: Iterable[int] | None = None) -> None:
        """Sizes of every file (truncation), and sha256 of the shards in ``only`` (``full``)."""
        itemsize = self.dtype.itemsize
        for i, shard in enumerate(self.manifest["shards"]):
            for kind, expected in (("tokens", shard["num_tokens"] * itemsize),
                                   ("docs", (shard["num_documents"] + 1) * 8)):
                path = self.path(i, kind)
                size = self._size(path)
                if size != expected:
                    raise LokiError(f"token shard {path} has {size} bytes, its manifest "
                                    f"{self.manifest_path} says {expected}: truncated or replaced")
        if verify == "full":
            jobs = [(i, kind) for i in (range(len(self.manifest["shards"])) if only is None
                                        else only) for kind in ("tokens", "docs")]

            def digest(job: tuple[int, str]) -> tuple[int, str, str]:
                path = self.path(*job)
                fs, p = _fs(path) if is_url(path) else (None, path)
                return (*job, _sha256_file(p, fs))

            # hashlib releases the GIL: shards hash in parallel, bounded by the disk, not a core
            with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
                for i, kind, found in pool.map(digest, jobs):
                    if found != self.manifest["shards"][i][f"sha256_{kind}"]:
                        raise LokiError(f"checksum mismatch for {self.path(i, kind)} (manifest "
                                        f"{self.manifest_path}); the file is corrupt or replaced:"
                                        f" re-copy it or re-run `loki tokenize`")

    def _size(self, path: str) -> int:
        try:
            if is_url(path):
                fs, p = _fs(path)
                return int(fs.size(p))
            return os.path.getsize(path)
        except FileNotFoundError as err:
            raise LokiError(f"token shard missing: {path}") from err
        except Exception as err:
            raise LokiError(f"cannot read token shard {path}: {err}") from err

    def reader(self, i: int, remote: Remote = "range", cache_dir: str | None = None,
               max_cached: int = 4) -> ShardReader:
        # Readers are opened per process (after a DataLoader worker forks), never pickled open.
        r = self.readers.get(i)
        if r is None or r.pid != os.getpid():
            r = ShardReader(self.path(i), self.dtype, self.manifest["shards"][i], remote,
                            cache_dir, max_cached)
            self.readers[i] = r
        return r

    def __getstate__(self) -> dict:
        return {"manifest_path": self.manifest_path, "manifest": self.manifest, "readers": {}}


_CACHE_ORDER: OrderedDict[str, Path] = OrderedDict()


class ShardReader:
    """Random access to one shard's tokens: pread (local), byte ranges or a cached copy."""

    def __init__(self, path: str, dtype: np.dtype, info: dict, remote: Remote = "range",
                 cache_dir: str | None = None, max_cached: int = 4) -> None:
        self.path, self.dtype, self.info = path, dtype, info
        self.pid = os.getpid()
        self._file = None
        self._fd: int | None = None
        if not is_url(path):
            self._fd = self._open_fd(path)
        elif remote == "cache":
            self._fd = self._open_fd(str(self._cached_copy(cache_dir, max_cached)))
        else:
            fs, p = _fs(path)
            try:
                self._file = fs.open(p, "rb", block_size=1 << 20, cache_type="readahead")
            except Exception as err:
                raise LokiError(f"cannot read token shard {path}: {err}") from err

    def _open_fd(self, path: str) -> int:
        # pread on a descriptor rather than np.memmap: mapped pages count as this process's
        # resident memory once touched, so a full epoch over a memmap would look like RSS
        # growing with the corpus; the page cache serves pread just as well.
        try:
            return os.open(path, os.O_RDONLY)
        except OSError as err:
            raise LokiError(f"cannot read token shard {path}: {err}") from err

    def __del__(self) -> None:
        if self._fd is not None and self.pid == os.getpid():
            os.close(self._fd)

    def _cached_copy(self, cache_dir: str | None, max_cached: int) -> Path:
        if cache_dir is None:
            raise LokiError(f"remote='cache' needs a cache folder to read {self.path}")
        folder = Path(cache_dir)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{self.info['sha256_tokens']}.tokens"
        if not target.exists():
            fs, p = _fs(self.path)
            tmp = target.with_suffix(f".part{os.getpid()}")
            try:
                with fs.open(p, "rb") as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 22)
            except Exception as err:
                tmp.unlink(missing_ok=True)
                raise LokiError(f"cannot read token shard {self.path}: {err}") from err
            if _sha256_file(str(tmp)) != self.info["sha256_tokens"]:
                tmp.unlink()
                raise LokiError(f"checksum mismatch for {self.path} (downloaded copy)")
            tmp.replace(target)
        _CACHE_ORDER[str(target)] = target
        _CACHE_ORDER.move_to_end(str(target))
        while len(_CACHE_ORDER) > max_cached:  # bounded: shard by shard, never the corpus
            _, old = _CACHE_ORDER.popitem(last=False)
            old.unlink(missing_ok=True)
        return target

    def read(self, start: int, count: int) -> np.ndarray:
        """Tokens ``[start, start + count)`` as a new int64 array."""
        itemsize = self.dtype.itemsize
        try:
            if self._fd is not None:
                data = os.pread(self._fd, count * itemsize, start * itemsize)
            else:
                self._file.seek(start * itemsize)
                data = self._file.read(count * itemsize)
        except Exception as err:
            raise LokiError(f"cannot read token shard {self.path}: {err}") from err
        if len(data) != count * itemsize:
            raise LokiError(f"token shard {self.path} ended early at token {start}: truncated")
        return np.frombuffer(data, dtype=self.dtype).astype(np.int64)

    def documents(self, set_: TokenShardSet, i: int) -> np.ndarray:
        """The shard's document start offsets (for forensics: which document a sample is in)."""
        path = set_.path(i, "docs")
        if is_url(path):
            fs, p = _fs(path)
            with fs.open(p, "rb") as f:
                return np.frombuffer(f.read(), dtype="<u8")
        return np.fromfile(path, dtype="<u8")
