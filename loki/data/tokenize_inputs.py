"""The inputs of ``loki tokenize``: listing the input files and reading their documents."""

from __future__ import annotations

import glob as globlib
import gzip
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from loki.errors import LokiError

TEXT_SUFFIXES = (".jsonl.gz", ".jsonl", ".json.gz", ".parquet", ".txt")


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
