"""The inputs of ``loki tokenize``: listing the input files and reading their documents."""

from __future__ import annotations

import glob as globlib
import gzip
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from loki.errors import LokiError

TEXT_SUFFIXES = (".jsonl.gz", ".jsonl", ".json.gz", ".parquet", ".txt")
# A source tag names its shard folder and files: one plain folder name, never a path or hidden,
# and not ending in .json (the data module reads a location ending in .json as a manifest)
SOURCE_TAG = re.compile(r"(?!.*\.json$)[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def check_source(tag: object, where: str) -> str:
    """``tag`` if it can name a shard folder, else a LokiError naming ``where`` and the tag."""
    if not isinstance(tag, str) or not SOURCE_TAG.fullmatch(tag):
        raise LokiError(f"{where}: source tag {tag!r} cannot name a shard folder; use up to 100 "
                        "letters, digits, '_', '.' or '-', starting with a letter or digit and "
                        "not ending in .json")
    return tag


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
        source = meta.get("source") or row.get("source") or default_source
        yield check_source(source, f"{path}: record {k}"), text
