"""``loki tokenize``: filtered documents -> token shards, one shard folder per source.

Reads the filter's output (datatrove ``*.jsonl.gz``), plain ``*.jsonl`` and ``*.parquet`` (keys:
``text`` and ``metadata.source``; a top-level ``source`` is accepted too) and ``*.txt`` files (one
document per file). Each document is encoded with the configured tokenizer and written followed
by end-of-text; files are read in sorted order, so the same inputs give byte-identical shards.

    loki tokenize --config experiments/data/tokenize-demo.yaml
    loki tokenize --inputs 'runs/filter/output/*.jsonl.gz' --output data/shards --tokenizer cl100k_base
"""

from __future__ import annotations

import glob as globlib
import gzip
import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from loki.errors import LokiError

TEXT_SUFFIXES = (".jsonl.gz", ".jsonl", ".json.gz", ".parquet", ".txt")


def load_tokenizer(spec: str):
    """The project tokenizer for ``spec`` ("cl100k_base" or a saved tokenizer's path)."""
    from loki.tokenizer import LokiTokenizer

    return LokiTokenizer.from_spec(spec)


def tokenizer_info(tok, spec: str) -> dict:
    return {"spec": str(spec), "name": tok.name, "vocab_hash": tok.vocab_hash,
            "vocab_size": int(tok.vocab_size), "eot_id": int(tok.eot_id)}


def expand_inputs(inputs: Iterable[str]) -> list[Path]:
    """Files from paths, folders (their text files, recursively) and globs; errors name the path."""
    files: list[Path] = []
    for entry in inputs:
        entry = str(entry)
        matches = sorted(globlib.glob(entry, recursive=True)) if any(
            c in entry for c in "*?[") else [entry]
        if not matches:
            raise LokiError(f"no input files match {entry}")
        for m in map(Path, matches):
            if m.is_dir():
                inner = sorted(p for p in m.rglob("*") if p.name.endswith(TEXT_SUFFIXES))
                if not inner:
                    raise LokiError(f"input folder {m} holds no {'/'.join(TEXT_SUFFIXES)} files")
                files += inner
            elif not m.is_file():
                raise LokiError(f"input not found: {m}")
            elif not m.name.endswith(TEXT_SUFFIXES):
                raise LokiError(f"cannot read {m}: expected one of {', '.join(TEXT_SUFFIXES)}")
            else:
                files.append(m)
    if not files:
        raise LokiError("no input files given")
    return files


def read_documents(path: Path, default_source: str) -> Iterator[tuple[str, str]]:
    """(source, text) pairs of one file."""
    name = path.name
    if name.endswith(".txt"):
        yield default_source, path.read_text(encoding="utf-8", errors="replace")
        return
    if name.endswith(".parquet"):
        from loki._optional import require

        pq = require("pyarrow.parquet", "data")
        rows = pq.read_table(path).to_pylist()
    else:
        opener = gzip.open if name.endswith(".gz") else open
        try:
            with opener(path, "rt", encoding="utf-8") as f:
                rows = [json.loads(line) for line in f if line.strip()]
        except (OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as err:
            raise LokiError(f"cannot read documents from {path}: {err}") from err
    for k, row in enumerate(rows):
        text = row.get("text")
        if not isinstance(text, str):
            raise LokiError(f"{path}: record {k} has no 'text' string")
        meta = row.get("metadata") or {}
        yield str(meta.get("source") or row.get("source") or default_source), text


def tokenize_files(files: list[Path], output: str | Path, tokenizer: str = "cl100k_base",
                   shard_tokens: int = 1 << 28, default_source: str = "web",
                   batch_documents: int = 256, log=print) -> dict[str, dict]:
    """Write ``<output>/<source>/`` shard folders; returns {source: manifest}."""
    from loki.data.shards import ShardWriter

    tok = load_tokenizer(tokenizer)
    info = tokenizer_info(tok, tokenizer)
    output = Path(output)
    writers: dict[str, ShardWriter] = {}
    started, n_docs = time.time(), 0
    for path in files:
        batch: list[tuple[str, str]] = []
        docs = read_documents(path, default_source)
        while True:
            batch = [d for _, d in zip(range(batch_documents), docs)]
            if not batch:
                break
            for (source, _), ids in zip(batch, tok.encode_batch([t for _, t in batch])):
                if source not in writers:
                    writers[source] = ShardWriter(
                        output / source, source, info, shard_tokens,
                        extra={"inputs": [str(f) for f in files]})
                writers[source].add_document(ids)
            n_docs += len(batch)
    if not writers:
        raise LokiError(f"no documents in {', '.join(map(str, files))}")
    manifests = {source: w.close() for source, w in sorted(writers.items())}
    for source, m in manifests.items():
        log(f"loki tokenize: {source}: {m['num_documents']} documents, {m['num_tokens']} tokens, "
            f"{len(m['shards'])} shard(s) -> {output / source}")
    log(f"loki tokenize: {n_docs} documents in {time.time() - started:.1f} s")
    return manifests


def build_parser():
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(prog="loki tokenize", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_argument("--inputs", type=list[str], required=True,
                        help="files, folders or globs of *.jsonl.gz / *.jsonl / *.parquet / *.txt")
    parser.add_argument("--output", type=str, required=True,
                        help="folder that receives one shard folder per source")
    parser.add_argument("--tokenizer", type=str, default="cl100k_base",
                        help="'cl100k_base' or the folder of a tokenizer saved by `loki tokenizer`")
    parser.add_argument("--shard_tokens", type=int, default=1 << 28,
                        help="tokens per shard file before starting the next one")
    parser.add_argument("--default_source", type=str, default="web",
                        help="source tag for documents without metadata.source")
    return parser


def parse_config(path: str | Path):
    """Parse (and type-check) a ``loki tokenize`` YAML config without running it."""
    return build_parser().parse_args(["--config", str(path)])


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    tokenize_files(expand_inputs(args.inputs), args.output, args.tokenizer, args.shard_tokens,
                   args.default_source)


if __name__ == "__main__":
    main()
