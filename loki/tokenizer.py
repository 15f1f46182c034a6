"""LokiTokenizer: a tiktoken ``Encoding`` with a stable vocabulary hash, and cl100k_base pruning.

The recipe's tokenizer is cl100k_base cut down to 32,000 ids. Encoding always runs in tiktoken
(Rust); this module only decides *which* of cl100k's byte-pair tokens to keep and keeps them in
their original merge order, so the pruned tokenizer is an ordinary tiktoken BPE.

Pruning keeps **BPE closure**: tiktoken encodes a regex piece that is not itself a token by
merging its bytes pair by pair, lowest rank first. A kept token that BPE can no longer build from
its bytes (because a token on its merge path was dropped) would be dead weight: it is only
reachable when a whole regex piece equals it. ``bpe_merge`` is that procedure in plain Python,
``unreachable_tokens`` checks a whole vocabulary with it, and ``select_vocabulary`` picks tokens
by usage together with every token on their original merge path ("parents"), which provably
keeps the BPE path unchanged (each merge on the path stays the lowest-ranked one available).

The saved form and ``vocab_hash`` are described in :mod:`loki.tokenizer_files`.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from loki import atomic
from loki.errors import LokiError
from loki.tokenizer_files import META_FILE, RANKS_FILE, base_ranks, read_saved, vocab_hash

EOT = "<|endoftext|>"
PAD = "<|pad|>"

# cl100k_base's pre-tokenizer regex and specials, as published with tiktoken (MIT).
CL100K_PAT_STR = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
CL100K_SPECIALS = {
    EOT: 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}


class LokiTokenizer:
    """Byte-level BPE tokenizer backed by ``tiktoken.Encoding``.

    ``encode`` never turns special-token text such as ``"<|endoftext|>"`` found in documents into
    a special id: it is encoded as ordinary text unless the caller passes ``allowed_special``.
    """

    def __init__(self, *, name: str, pat_str: str, ranks: dict[bytes, int],
                 specials: dict[str, int], base: str, meta: dict | None = None) -> None:
        import tiktoken

        if EOT not in specials:
            raise LokiError(f"tokenizer {name!r} has no {EOT} special token")
        self.name, self.base, self.pat_str = name, base, pat_str
        self.ranks, self.specials = ranks, specials
        self.meta = dict(meta or {})
        self.vocab_size = max([*ranks.values(), *specials.values()]) + 1
        self.vocab_hash = vocab_hash(pat_str, ranks, specials)
        self.encoding = tiktoken.Encoding(
            name, pat_str=pat_str, mergeable_ranks=ranks, special_tokens=specials)
        self.eot_id = specials[EOT]
        # cl100k_base has no pad token; padding positions are masked out of the loss anyway.
        self.pad_id = specials.get(PAD, self.eot_id)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_tiktoken(cls, name: str = "cl100k_base") -> LokiTokenizer:
        """The unpruned base encoding (ids identical to tiktoken's), loaded offline."""
        name = name.removesuffix("_offline")
        return cls(name=name, pat_str=CL100K_PAT_STR, ranks=base_ranks(name),
                   specials=dict(CL100K_SPECIALS), base=name)

    @classmethod
    def from_spec(cls, spec: str | os.PathLike | LokiTokenizer) -> LokiTokenizer:
        """``"cl100k_base"`` or the path of a saved tokenizer (directory or its JSON)."""
        if isinstance(spec, LokiTokenizer):
            return spec
        if str(spec).removesuffix("_offline") == "cl100k_base":
            return cls.from_tiktoken("cl100k_base")
        return cls.load(spec)

    @classmethod
    def load(cls, path: str | os.PathLike) -> LokiTokenizer:
        """Load a saved tokenizer; refuses damaged files and files whose content does not match
        the recorded hash (:func:`loki.tokenizer_files.read_saved`)."""
        meta, ranks = read_saved(Path(path))
        return cls(name=meta["name"], pat_str=meta["pat_str"], ranks=ranks,
                   specials=meta["special_tokens"], base=meta.get("base", ""), meta=meta)

    def save(self, path: str | os.PathLike, extra: dict | None = None) -> Path:
        """Write ``tokenizer.tiktoken`` + ``tokenizer.json`` into directory ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        lines = (base64.b64encode(t) + b" %d\n" % r
                 for t, r in sorted(self.ranks.items(), key=lambda kv: kv[1]))
        meta = {**self.meta, **(extra or {})}
        meta.update(name=self.name, base=self.base, pat_str=self.pat_str,
                    special_tokens=self.specials, vocab_size=self.vocab_size,
                    vocab_hash=self.vocab_hash, ranks_file=RANKS_FILE)
        # Both files are written in full beside the old ones before either replaces its
        # predecessor, so a failed save leaves an earlier tokenizer in ``path`` whole.
        with atomic.atomic_write(path / RANKS_FILE, "wb") as ranks_out, \
                atomic.atomic_write(path / META_FILE, "w", encoding="utf-8") as meta_out:
            ranks_out.write(b"".join(lines))
            meta_out.write(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
        self.meta = meta
        return path

    # ------------------------------------------------------------------ use
    def encode(self, text: str, allowed_special: Iterable[str] | str = ()) -> list[int]:
        """Token ids of ``text``; special-token strings are plain text unless allowed."""
        allowed = allowed_special if allowed_special == "all" else set(allowed_special)
        if not allowed:
            return self.encoding.encode_ordinary(text)
        return self.encoding.encode(text, allowed_special=allowed, disallowed_special=())

    def encode_batch(self, texts: Sequence[str], num_threads: int = 8) -> list[list[int]]:
        """``encode`` over many texts on tiktoken's thread pool (no specials produced)."""
        return self.encoding.encode_ordinary_batch(list(texts), num_threads=num_threads)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; byte sequences that are not valid UTF-8 become U+FFFD."""
        return self.encoding.decode(list(ids))

    def token_bytes(self, idx: int) -> bytes:
        return self.encoding.decode_single_token_bytes(idx)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"LokiTokenizer({self.name!r}, vocab_size={self.vocab_size}, hash={self.vocab_hash})"


# ---------------------------------------------------------------------- BPE closure
def bpe_merge(data: bytes, ranks: Mapping[bytes, int]) -> list[bytes]:
    """Byte-pair merge ``data`` with ``ranks``: repeatedly join the adjacent pair whose
    concatenation has the lowest rank (leftmost on ties), as tiktoken does inside a piece."""
    parts = [data[i:i + 1] for i in range(len(data))]
    while len(parts) > 1 and (at := _best_pair(parts, ranks)) >= 0:
        parts[at:at + 2] = [parts[at] + parts[at + 1]]
    return parts


def unreachable_tokens(ranks: Mapping[bytes, int]) -> list[bytes]:
    """Multi-byte tokens that BPE cannot build from their own bytes with ``ranks``."""
    return [t for t in ranks if len(t) > 1 and bpe_merge(t, ranks) != [t]]


class MergeTree:
    """Each token's "parents": the two tokens that the last BPE merge of its bytes joins,
    computed lazily with the full base ranks and memoized."""

    def __init__(self, ranks: Mapping[bytes, int]) -> None:
        self.ranks = ranks
        self._parents: dict[bytes, tuple[bytes, bytes] | None] = {}

    def parents(self, token: bytes) -> tuple[bytes, bytes] | None:
        if token not in self._parents:
            result = None
            if len(token) > 1:
                parts = [token[i:i + 1] for i in range(len(token))]
                while len(parts) > 2:
                    at = _best_pair(parts, self.ranks)
                    if at < 0:
                        raise LokiError(f"base token {token!r} is not reachable by its own BPE")
                    parts[at:at + 2] = [parts[at] + parts[at + 1]]
                result = (parts[0], parts[1])
            self._parents[token] = result
        return self._parents[token]

    def ancestors(self, token: bytes) -> set[bytes]:
        """``token`` and every token on its merge path (single bytes included)."""
        out, stack = set(), [token]
        while stack:
            t = stack.pop()
            if t not in out:
                out.add(t)
                stack.extend(self.parents(t) or ())
        return out


def _best_pair(parts: list[bytes], ranks: Mapping[bytes, int]) -> int:
    """Index of the adjacent pair to merge next (lowest rank, leftmost), or -1 when none."""
    best, at = None, -1
    for i in range(len(parts) - 1):
        rank = ranks.get(parts[i] + parts[i + 1])
        if rank is not None and (best is None or rank < best):
            best, at = rank, i
    return at


def select_vocabulary(ranks: Mapping[bytes, int], priority: Iterable[bytes], n_tokens: int,
                      exclude: Iterable[bytes] = ()) -> list[bytes]:
    """Choose exactly ``n_tokens`` mergeable tokens, closed under BPE.

    All 256 single bytes are kept; then tokens in ``priority`` order (most used first), each
    together with its missing ancestors, when the whole group still fits. A token whose merge
    path goes through an ``exclude``d token is skipped (it would be unreachable). Returns the
    kept tokens in original rank order; fewer than ``n_tokens`` when ``priority`` runs out.
    """
    tree = MergeTree(ranks)
    banned = set(exclude)
    kept = {t for t in ranks if len(t) == 1}
    if len(kept) != 256 or n_tokens < 256:
        raise LokiError(f"need >= 256 tokens for the single bytes, asked for {n_tokens}")
    for token in priority:
        if len(kept) >= n_tokens:
            break
        if token in kept or token in banned or token not in ranks:
            continue
        group = tree.ancestors(token) - kept
        if group & banned or len(kept) + len(group) > n_tokens:
            continue
        kept |= group
    return sorted(kept, key=ranks.__getitem__)


def pruned_tokenizer(base: LokiTokenizer, kept: Sequence[bytes], specials: Sequence[str],
                     name: str, meta: dict | None = None) -> LokiTokenizer:
    """Renumber ``kept`` densely in original merge order and append ``specials``."""
    order = sorted(kept, key=base.ranks.__getitem__)
    ranks = {t: i for i, t in enumerate(order)}
    if EOT not in specials:
        raise LokiError(f"special_tokens must include {EOT}")
    special_ids = {s: len(ranks) + i for i, s in enumerate(dict.fromkeys(specials))}
    return LokiTokenizer(name=name, pat_str=base.pat_str, ranks=ranks, specials=special_ids,
                         base=base.name, meta=meta)
