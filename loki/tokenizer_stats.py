"""Measuring tokenizers on text (``loki tokenizer stats``): bytes/token and encode throughput."""

from __future__ import annotations

import time
from collections.abc import Sequence

from loki.errors import LokiError
from loki.tokenizer import LokiTokenizer
from loki.tokenizer_corpus import read_texts


def encode_stats(tok: LokiTokenizer, texts: Sequence[str], repeat: int = 3,
                 num_threads: int = 1) -> dict:
    """Bytes/token and encode throughput (best of ``repeat``) of ``tok`` on ``texts``."""
    n_bytes = sum(len(t.encode("utf-8", "replace")) for t in texts)
    best = float("inf")
    for _ in range(max(repeat, 1)):
        t0 = time.perf_counter()
        ids = tok.encode_batch(texts, num_threads=num_threads)
        best = min(best, time.perf_counter() - t0)
    n_tokens = sum(len(x) for x in ids)
    return {"tokenizer": tok.name, "vocab_size": tok.vocab_size, "vocab_hash": tok.vocab_hash,
            "bytes": n_bytes, "tokens": n_tokens, "bytes_per_token": n_bytes / max(n_tokens, 1),
            "encode_mb_s": n_bytes / 1e6 / best}


def stats(tokenizers: Sequence[str], text: Sequence[str], max_bytes: int = 4_000_000,
          repeat: int = 3, num_threads: int = 1, text_field: str = "text") -> list[dict]:
    for name, value in (("max_bytes", max_bytes), ("repeat", repeat),
                        ("num_threads", num_threads)):
        if value < 1:
            raise LokiError(f"{name} must be >= 1, got {value}")
    toks = [LokiTokenizer.from_spec(s) for s in tokenizers]  # a bad one fails before the reading
    texts = read_texts(text, max_bytes, text_field)
    if not any(texts):
        found = f"its {len(texts)} documents are all empty" if texts else "no documents"
        raise LokiError(f"no text read from {', '.join(map(str, text))}: {found}; "
                        "give files with text")
    rows = [encode_stats(tok, texts, repeat, num_threads) for tok in toks]
    print(f"{'tokenizer':<40} {'vocab':>7} {'hash':>16} {'bytes/token':>11} {'MB/s':>7}")
    for r in rows:
        print(f"{r['tokenizer']:<40} {r['vocab_size']:>7} {r['vocab_hash']:>16} "
              f"{r['bytes_per_token']:>11.3f} {r['encode_mb_s']:>7.2f}")
    return rows
