"""``ShardWriter``: the token shards ``loki tokenize`` writes (the format: ``loki.data.shards``)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from loki.data.shards import FORMAT, MANIFEST, VERSION, token_dtype


class ShardWriter:
    """Append documents; rolls over to a new shard every ``shard_tokens`` tokens."""

    def __init__(self, folder: str | Path, source: str, tokenizer: dict,
                 shard_tokens: int = 1 << 28, extra: dict | None = None) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in [*self.folder.glob("*.tokens"), *self.folder.glob("*.docs"),
                      *self.folder.glob(MANIFEST)]:
            stale.unlink()  # a rerun replaces the set; old shards never mix with new ones
        self.source, self.tokenizer, self.extra = source, dict(tokenizer), dict(extra or {})
        self.eot_id = int(tokenizer["eot_id"])
        self.dtype = token_dtype(int(tokenizer["vocab_size"]))
        self.shard_tokens = int(shard_tokens)
        self.shards: list[dict] = []
        self._file = None

    def _open(self) -> None:
        stem = f"{self.source}-{len(self.shards):05d}"
        self._stem, self._offsets, self._n = stem, [0], 0
        self._hash = hashlib.sha256()
        self._file = open(self.folder / f"{stem}.tokens", "wb")

    def add_document(self, ids: Sequence[int] | np.ndarray) -> None:
        """Write one document's ids followed by end-of-text."""
        if self._file is None:
            self._open()
        arr = np.empty(len(ids) + 1, dtype=self.dtype)
        arr[:-1] = ids
        arr[-1] = self.eot_id
        data = arr.tobytes()
        self._file.write(data)
        self._hash.update(data)
        self._n += len(arr)
        self._offsets.append(self._n)
        if self._n >= self.shard_tokens:
            self._finish_shard()

    def _finish_shard(self) -> None:
        self._file.close()
        self._file = None
        docs = np.asarray(self._offsets, dtype="<u8").tobytes()
        (self.folder / f"{self._stem}.docs").write_bytes(docs)
        self.shards.append({
            "tokens": f"{self._stem}.tokens", "docs": f"{self._stem}.docs",
            "num_tokens": self._n, "num_documents": len(self._offsets) - 1,
            "sha256_tokens": self._hash.hexdigest(),
            "sha256_docs": hashlib.sha256(docs).hexdigest(),
        })

    def close(self) -> dict:
        """Finish the last shard and write ``manifest.json``; returns the manifest."""
        if self._file is not None:
            self._finish_shard()
        manifest = {
            "format": FORMAT, "version": VERSION, "source": self.source,
            "dtype": self.dtype.str, "tokenizer": self.tokenizer,
            "num_tokens": sum(s["num_tokens"] for s in self.shards),
            "num_documents": sum(s["num_documents"] for s in self.shards),
            "shards": self.shards, **self.extra,
        }
        tmp = self.folder / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=1))
        tmp.replace(self.folder / MANIFEST)
        return manifest
