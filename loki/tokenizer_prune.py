"""Fitting a pruned cl100k_base vocabulary on a corpus (``loki tokenizer prune``).

``prune`` counts how often the base encoding uses each token on a corpus
(:mod:`loki.tokenizer_usage`), keeps the 256 bytes plus the most used tokens with their BPE
parents (``loki.tokenizer.select_vocabulary``), checks closure on the whole result and writes the
tokenizer plus ``prune_report.{json,md}``. A deterministic slice of documents is held out of the
counts to compare bytes/token with the base.

A second run with the same settings and unchanged corpus files reuses the saved tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from loki import atomic
from loki.errors import LokiError
from loki.output import check_writable
from loki.tokenizer import (
    EOT,
    META_FILE,
    PAD,
    LokiTokenizer,
    pruned_tokenizer,
    select_vocabulary,
    unreachable_tokens,
)
from loki.tokenizer_corpus import corpus_files, corpus_manifest
from loki.tokenizer_usage import count_usage


@dataclass
class PruneConfig:
    """Settings of ``loki tokenizer prune``."""

    corpus: list[str] = field(default_factory=list)
    """Files, folders or glob patterns: *.jsonl[.gz] and *.parquet (``text_field``), *.txt, or a
    ``datasets.save_to_disk`` folder; fsspec URLs (s3://..., with its fsspec backend) too."""
    output: str = "data/tokenizer/cl100k-32k"
    """Folder for tokenizer.tiktoken, tokenizer.json and prune_report.{json,md}."""
    vocab_size: int = 32_000
    """Total ids of the pruned tokenizer, special tokens included."""
    base: str = "cl100k_base"
    """Base encoding to prune (loaded offline)."""
    special_tokens: list[str] = field(default_factory=lambda: [EOT, PAD])
    """Specials appended after the mergeable tokens, in this order; must include <|endoftext|>."""
    text_field: str = "text"
    """Field holding the document text in JSONL files and datasets."""
    sample_bytes: int | None = None
    """Stop counting after this many UTF-8 bytes of (non held-out) text; None = whole corpus."""
    held_out_fraction: float = 0.02
    """Share of documents (chosen by CRC32 of their text) kept out of the counts."""
    held_out_max_bytes: int = 2_000_000
    """At most this many held-out bytes are kept in memory for the bytes/token comparison."""
    workers: int = 2
    """Counting processes; 1 counts in this process."""
    batch_bytes: int = 1_000_000
    """Text per counting task sent to a worker."""
    exclude_tokens: list[str] = field(default_factory=list)
    """Token strings never kept; tokens whose BPE merge path needs them are dropped too."""
    allow_unranked_fill: bool = False
    """When the corpus uses fewer distinct tokens than needed, fill up with unused tokens in
    base merge order instead of failing."""
    overwrite: bool = False
    """Replace an existing tokenizer in ``output`` that was built with other settings/corpus."""
    report_top_dropped: int = 40
    """How many of the most used dropped tokens the report lists."""

    def __post_init__(self) -> None:
        # checked here, before the corpus is listed; vocab_size against the base in ``prune``
        if not 0.0 <= self.held_out_fraction <= 1.0:
            raise LokiError(f"held_out_fraction {self.held_out_fraction} is not a share between "
                            "0 and 1 (0.02 holds 2% of the documents out of the counts)")
        for name, least in (("workers", 1), ("batch_bytes", 1), ("held_out_max_bytes", 0),
                            ("sample_bytes", 0), ("report_top_dropped", 0)):
            value = getattr(self, name)
            if value is not None and value < least:
                raise LokiError(f"{name} must be >= {least}, got {value}")
        if EOT not in self.special_tokens:
            raise LokiError(f"special_tokens must include {EOT}, got {self.special_tokens}")
        n_mergeable = self.vocab_size - len(dict.fromkeys(self.special_tokens))
        if n_mergeable < 256:
            raise LokiError(f"vocab_size {self.vocab_size} leaves {n_mergeable} < 256 ids for the "
                            "byte tokens after the special tokens; raise vocab_size")


# ---------------------------------------------------------------------- prune
def _fingerprint(cfg: PruneConfig, manifest: list[dict]) -> str:
    settings = {k: v for k, v in asdict(cfg).items()
                if k not in ("output", "workers", "overwrite", "batch_bytes", "report_top_dropped")}
    blob = json.dumps({"settings": settings, "corpus": manifest}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def bytes_per_token(tok: LokiTokenizer, texts: Sequence[str]) -> float:
    n_bytes = sum(len(t.encode("utf-8", "replace")) for t in texts)
    n_tokens = sum(len(x) for x in tok.encode_batch(texts))
    return n_bytes / max(n_tokens, 1)


def _mergeable_tokens(cfg: PruneConfig, base: LokiTokenizer) -> int:
    """How many of ``base``'s mergeable tokens ``cfg`` keeps; refuses what ``base`` cannot give."""
    n_specials = len(dict.fromkeys(cfg.special_tokens))
    most = len(base.ranks) + n_specials
    if cfg.vocab_size > most:
        raise LokiError(
            f"vocab_size {cfg.vocab_size} is above the maximum {most} for {base.name} (its "
            f"{len(base.ranks)} mergeable tokens + {n_specials} special tokens); lower vocab_size")
    unknown = [t for t in cfg.exclude_tokens if t.encode("utf-8") not in base.ranks]
    if unknown:
        raise LokiError(f"exclude_tokens {unknown} are not {base.name} tokens, so excluding them "
                        "would change nothing; give token strings such as ' the'")
    return cfg.vocab_size - n_specials


def prune(cfg: PruneConfig) -> LokiTokenizer:
    """Fit and save the pruned tokenizer (or reuse an identical earlier build)."""
    out = Path(cfg.output)
    base = LokiTokenizer.from_spec(cfg.base)
    n_mergeable = _mergeable_tokens(cfg, base)
    exclude = [s.encode("utf-8") for s in cfg.exclude_tokens]
    files = corpus_files(cfg.corpus)
    manifest = corpus_manifest(files)
    fingerprint = _fingerprint(cfg, manifest)
    if (out / META_FILE).exists():
        try:
            old = LokiTokenizer.load(out)
        except LokiError:
            if not cfg.overwrite:
                raise
            old = None  # damaged earlier build, about to be replaced
        if old is not None and old.meta.get("prune_fingerprint") == fingerprint:
            print(f"tokenizer in {out} is up to date ({old!r})")
            return old
        if not cfg.overwrite:
            raise LokiError(f"{out} holds a tokenizer built from other settings or corpus; "
                            "choose another output or set overwrite: true")
    check_writable(out, "output")  # before the counting, which can take an hour

    start = time.time()
    usage = count_usage(cfg, files, base.encoding.n_vocab)
    id_to_token = {r: t for t, r in base.ranks.items()}
    used = [int(i) for i in np.argsort(-usage.counts, kind="stable") if usage.counts[i] > 0]
    priority = [id_to_token[i] for i in used if i in id_to_token]
    kept = select_vocabulary(base.ranks, priority, n_mergeable, exclude)
    filled = 0
    if len(kept) < n_mergeable:
        n_used = sum(len(t) > 1 for t in priority)
        if not cfg.allow_unranked_fill:
            raise LokiError(
                f"corpus too small to rank {cfg.vocab_size} tokens: {usage.bytes} bytes in "
                f"{usage.docs} documents use {n_used} distinct multi-byte tokens, giving "
                f"{len(kept)} of the {n_mergeable} mergeable tokens needed (256 bytes + "
                f"{n_mergeable - 256}); add text, lower vocab_size or set allow_unranked_fill")
        rest = sorted(base.ranks, key=base.ranks.__getitem__)
        filled = n_mergeable - len(kept)
        kept = select_vocabulary(base.ranks, [*priority, *rest], n_mergeable, exclude)
        if len(kept) < n_mergeable:  # only the exclusions can leave the fill short
            raise LokiError(
                f"exclude_tokens {cfg.exclude_tokens} leave {len(kept)} {base.name} tokens whose "
                f"BPE merge path avoids them, fewer than the {n_mergeable} mergeable tokens "
                f"vocab_size {cfg.vocab_size} needs; lower vocab_size or exclude fewer tokens")
    tok = pruned_tokenizer(base, kept, cfg.special_tokens,
                           name=f"{base.name}-pruned-{cfg.vocab_size}")
    broken = unreachable_tokens(tok.ranks)
    if broken:  # select_vocabulary keeps every token's merge path: a bug, not the input
        raise AssertionError(f"pruning broke BPE closure: {len(broken)} kept tokens are "
                             f"unreachable, e.g. {broken[:5]}")

    kept_set = set(kept)
    # kept although the corpus never used them directly: BPE parents of used tokens (or fill)
    unused_kept = sum(len(t) > 1 and usage.counts[base.ranks[t]] == 0 for t in kept)
    dropped = [(id_to_token[i], int(usage.counts[i])) for i in used
               if i in id_to_token and id_to_token[i] not in kept_set][:cfg.report_top_dropped]
    held = usage.held_out
    report = {
        "vocab_size": tok.vocab_size, "vocab_hash": tok.vocab_hash, "base": base.name,
        "mergeable_tokens": len(tok.ranks), "special_tokens": tok.specials,
        "corpus_bytes": usage.bytes, "corpus_docs": usage.docs, "empty_docs": usage.empty_docs,
        "distinct_tokens_used": len(used), "kept_unused": int(unused_kept),
        "filled_unranked": filled, "excluded": cfg.exclude_tokens,
        "held_out_docs": usage.held_out_docs, "held_out_bytes": usage.held_out_bytes,
        "held_out_kept_docs": len(held),
        "held_out_kept_bytes": sum(len(t.encode("utf-8", "replace")) for t in held),
        "bytes_per_token_held_out": {
            "base": bytes_per_token(base, held) if held else None,
            "pruned": bytes_per_token(tok, held) if held else None},
        "most_used_dropped": [{"token": t.decode("utf-8", "replace"), "count": c}
                              for t, c in dropped],
        "seconds": round(time.time() - start, 1),
    }
    bpt = report["bytes_per_token_held_out"]
    report["bytes_per_token_held_out"]["ratio"] = (
        bpt["pruned"] / bpt["base"] if held else None)
    tok.save(out, extra={"prune_fingerprint": fingerprint, "corpus": manifest,
                         "prune_config": asdict(cfg), "corpus_bytes": usage.bytes})
    atomic.write_text(out / "prune_report.json", json.dumps(report, indent=2, ensure_ascii=False))
    atomic.write_text(out / "prune_report.md", _markdown(report))
    print(_markdown(report))
    return tok


def _markdown(r: dict) -> str:
    b = r["bytes_per_token_held_out"]

    def fmt(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    lines = [
        f"# Pruned tokenizer {r['vocab_hash']}", "",
        "| item | value |", "| --- | --- |",
        f"| vocab size (incl. {len(r['special_tokens'])} specials) | {r['vocab_size']} |",
        f"| base | {r['base']} |",
        f"| corpus | {r['corpus_bytes']:,} bytes, {r['corpus_docs']:,} documents |",
        f"| empty documents (no text to count) | {r['empty_docs']:,} |",
        f"| distinct base tokens used | {r['distinct_tokens_used']:,} |",
        f"| kept though unused (BPE parents) | {r['kept_unused']} |",
        f"| filled without usage | {r['filled_unranked']} |",
        f"| held-out (not counted) | {r['held_out_bytes']:,} bytes, {r['held_out_docs']:,} "
        "documents |",
        f"| held-out kept for bytes/token | {r['held_out_kept_bytes']:,} bytes, "
        f"{r['held_out_kept_docs']:,} documents |",
        f"| bytes/token held-out, base | {fmt(b['base'])} |",
        f"| bytes/token held-out, pruned | {fmt(b['pruned'])} (ratio {fmt(b['ratio'])}) |",
        "", "Most used dropped tokens:", "",
        "| token | count |", "| --- | --- |",
    ]
    lines += [f"| `{json.dumps(d['token'], ensure_ascii=False)[1:-1]}` | {d['count']:,} |"
              for d in r["most_used_dropped"]]
    return "\n".join(lines) + "\n"
