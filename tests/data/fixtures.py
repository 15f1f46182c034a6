"""Tiny token shards for the data tests: a fake 256-id tokenizer, documents of known content."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from loki.data.shard_writer import ShardWriter

TOKENIZER = {"spec": "test-256", "name": "test", "vocab_hash": "testhash00000000",
             "vocab_size": 256, "eot_id": 255}


def write_source(folder: Path, source: str = "web", n_docs: int = 40, doc_len: int = 50,
                 shard_tokens: int = 600, seed: int = 0, tokenizer: dict | None = None) -> Path:
    """A shard folder with ``n_docs`` random documents (ids < 255) in several shards."""
    rng = np.random.default_rng(seed)
    writer = ShardWriter(folder / source, source, tokenizer or TOKENIZER, shard_tokens)
    for _ in range(n_docs):
        writer.add_document(rng.integers(0, 255, size=int(rng.integers(doc_len // 2, doc_len))))
    writer.close()
    return folder / source
