"""How often the base encoding uses each token on a corpus, for ``loki tokenizer prune``.

Documents are streamed (:mod:`loki.tokenizer_corpus`) and counted by worker processes over batches
of documents, at most ``2 * workers`` batches in flight, so memory does not grow with the corpus.
A deterministic slice of documents (by CRC32 of the text) is held out of the counts, and part of
it kept to compare bytes/token with the base.
"""

from __future__ import annotations

import collections
import multiprocessing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from loki.tokenizer import LokiTokenizer
from loki.tokenizer_corpus import is_held_out, iter_documents

if TYPE_CHECKING:
    from loki.tokenizer_prune import PruneConfig

_WORKER_TOKENIZER: LokiTokenizer | None = None


def _init_worker(base: str) -> None:
    global _WORKER_TOKENIZER
    _WORKER_TOKENIZER = LokiTokenizer.from_spec(base)


def _count_batch(docs: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(token ids, counts) of one batch of documents under the base encoding."""
    ids = _WORKER_TOKENIZER.encoding.encode_ordinary_batch(docs, num_threads=1)
    flat = np.concatenate([np.asarray(x, dtype=np.int64) for x in ids] or [np.zeros(0, np.int64)])
    return np.unique(flat, return_counts=True)


@dataclass
class UsageCounts:
    counts: np.ndarray
    docs: int = 0
    bytes: int = 0
    empty_docs: int = 0
    """Documents with an empty text: read, but nothing to count."""
    held_out_docs: int = 0
    """Documents held out of the counts, all of them."""
    held_out_bytes: int = 0
    held_out: list[str] = field(default_factory=list)
    """The held-out documents kept for the bytes/token comparison (``held_out_max_bytes``)."""


def count_usage(cfg: PruneConfig, files: Sequence[Path | str], n_vocab: int) -> UsageCounts:
    """Token usage counts over the corpus (held-out slice excluded), streamed and parallel."""
    usage = UsageCounts(counts=np.zeros(n_vocab, dtype=np.int64))
    held_bytes = 0

    def batches() -> Iterator[list[str]]:
        nonlocal held_bytes
        batch, size = [], 0
        for text in iter_documents(files, cfg.text_field):
            if not text:
                usage.empty_docs += 1
                continue
            n = len(text.encode("utf-8", "replace"))
            if is_held_out(text, cfg.held_out_fraction):
                usage.held_out_docs += 1
                usage.held_out_bytes += n
                if held_bytes + n <= cfg.held_out_max_bytes:
                    usage.held_out.append(text)
                    held_bytes += n
                continue
            if cfg.sample_bytes is not None and usage.bytes >= cfg.sample_bytes:
                break
            batch.append(text)
            size += n
            usage.docs += 1
            usage.bytes += n
            if size >= cfg.batch_bytes:
                yield batch
                batch, size = [], 0
        if batch:
            yield batch

    def add(result: tuple[np.ndarray, np.ndarray]) -> None:
        np.add.at(usage.counts, result[0], result[1])

    if cfg.workers <= 1:
        _init_worker(cfg.base)
        for batch in batches():
            add(_count_batch(batch))
        return usage
    ctx = multiprocessing.get_context("spawn")  # no fork of tiktoken's threads
    with ctx.Pool(cfg.workers, initializer=_init_worker, initargs=(cfg.base,)) as pool:
        pending: collections.deque = collections.deque()
        for batch in batches():
            pending.append(pool.apply_async(_count_batch, (batch,)))
            while len(pending) >= 2 * cfg.workers:  # bound memory: few batches in flight
                add(pending.popleft().get())
        while pending:
            add(pending.popleft().get())
    return usage
