"""What a ``LokiDataModule`` reads, and the checks that it all fits together.

Token shards come per source from folders, manifests, globs or fsspec URLs. A raw corpus
(``data.corpus``) is tokenized once into a cache folder named after its files and the tokenizer,
whose sources are then read like any shards. Every shard set must be made with one tokenizer (the
named one, when ``data.tokenizer`` is set), its files must pass ``TokenShardSet.check`` (each rank
checks its share), and the model must embed every id of the data.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loki.data.shards import TokenShardSet, Verify
from loki.errors import LokiError


# ---------------------------------------------------------------------- raw corpus
def open_corpus(corpus: str | list[str], tokenizer: str | None) -> tuple[list[Path], dict]:
    """The corpus's files (none of them empty) and the tokenizer that will tokenize them
    (default cl100k_base)."""
    from loki.data.tokenize import expand_inputs, load_tokenizer, tokenizer_info

    files = expand_inputs([corpus] if isinstance(corpus, str) else corpus)
    for f in files:
        if f.stat().st_size == 0:
            raise LokiError(f"corpus file {f} is empty")
    spec = tokenizer or "cl100k_base"
    return files, tokenizer_info(load_tokenizer(spec), spec)


def corpus_folder(files: list[Path], vocab_hash: str, cache_dir: str) -> Path:
    """The cache folder of the corpus's shards: named after the files (names, sizes, times) and
    the tokenizer, so a changed file or tokenizer makes a new one."""
    h = hashlib.sha256(f"v1 {vocab_hash}".encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()} {st.st_size} {st.st_mtime_ns}\n".encode())
    return Path(cache_dir) / f"corpus-{h.hexdigest()[:16]}"


def tokenize_corpus(files: list[Path], folder: Path, spec: str, log: Callable[[str], Any],
                    wait_s: float = 3600.0, poll_s: float = 10.0) -> None:
    """Tokenize the corpus into ``folder`` unless an earlier run finished it. When another
    process is tokenizing the same files into it (each node's first rank, on a filesystem the
    nodes share), wait up to ``wait_s`` for its shards instead of writing them a second time."""
    from loki.atomic import write_text
    from loki.data.tokenize import tokenize_files
    from loki.data.tokenize_staging import StagingInUse

    deadline = time.monotonic() + wait_s
    waiting = False
    while not (folder / "done").exists():
        try:
            tokenize_files(files, folder, spec, log=log)
        except StagingInUse as busy:
            if time.monotonic() > deadline:
                raise LokiError(f"{busy} (waited {wait_s:.0f} s for it to finish)") from None
            if not waiting:
                log(f"the corpus cache {folder} is being written by another process; waiting "
                    "for it")
                waiting = True
            time.sleep(poll_s)
            continue
        write_text(folder / "done", "ok\n")


def corpus_sources(folder: Path) -> dict[str, list[str]]:
    """Source name -> shard folder of a tokenized corpus."""
    return {p.parent.name: [str(p.parent)] for p in sorted(folder.glob("*/manifest.json"))}


# ---------------------------------------------------------------------- checks
def check_tokenizer(sets: list[TokenShardSet], spec: str | None) -> dict:
    """The tokenizer every set was made with: the one ``spec`` names, else the first set's."""
    expected = None
    if spec is not None:
        from loki.data.tokenize import load_tokenizer, tokenizer_info

        expected = tokenizer_info(load_tokenizer(spec), spec)
    for s in sets:
        ref = expected or sets[0].manifest["tokenizer"]
        if s.vocab_hash != ref["vocab_hash"]:
            raise LokiError(
                f"token shards {s.manifest_path} were made with tokenizer vocab_hash "
                f"{s.vocab_hash}, expected {ref['vocab_hash']} ({ref.get('spec', 'shards')});"
                f" re-run `loki tokenize` with the model's tokenizer")
    return dict(expected or sets[0].manifest["tokenizer"])


def open_checked(manifests: list[str], spec: str | None, verify: Verify, rank: int,
                 world_size: int) -> list[TokenShardSet]:
    """The shard sets of ``manifests`` (from ``expand_locations``), checked: one tokenizer, and
    this rank's share of the files intact (``verify``)."""
    sets = [TokenShardSet.open(loc) for loc in manifests]
    check_tokenizer(sets, spec)
    for s in sets:
        n = len(s.manifest["shards"])
        s.check(verify, only=range(rank, n, world_size))
    return sets


def check_model(module: Any, vocab_hash: str, vocab_size: int) -> None:
    """Refuse a model trained with another tokenizer, or one with too few embeddings."""
    model_hash = getattr(module, "vocab_hash", None)
    if model_hash is not None and model_hash != vocab_hash:
        raise LokiError(f"the model was trained with tokenizer vocab_hash {model_hash}, the "
                        f"data uses {vocab_hash}; tokenize the data with that tokenizer")
    config = getattr(module, "config", None)
    model_vocab = getattr(config, "vocab_size", None)
    if model_vocab is not None and model_vocab < vocab_size:
        raise LokiError(f"model vocab_size {model_vocab} < data vocab_size "
                        f"{vocab_size}; link model.vocab_size to data.vocab_size")
