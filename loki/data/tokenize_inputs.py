"""The inputs of ``loki tokenize``: listing the input files and reading their documents."""

from __future__ import annotations

import glob as globlib
import gzip
import json
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
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


def expand_inputs(inputs: Iterable[str], log: Callable[[str], object] = print) -> list[Path]:
    """Files from paths, folders (their text files, recursively) and globs; errors name the path.

    A file named more than once (say by its folder and by its path) is read once, in its first
    place, and ``log`` says so."""
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
    unique: dict[Path, Path] = {}
    repeated: dict[Path, Path] = {}  # each file once, by the name it was first given
    for f in files:
        if f.resolve() in unique:
            repeated.setdefault(f.resolve(), unique[f.resolve()])
        else:
            unique[f.resolve()] = f
    if repeated:
        names = list(repeated.values())
        more = f" and {len(names) - 3} more" if len(names) > 3 else ""
        log(f"{len(names)} input file(s) named more than once, read once: "
            f"{', '.join(map(str, names[:3]))}{more}")
    return list(unique.values())


def read_documents(path: Path, default_source: str) -> Iterator[tuple[str, str]]:
    """(source, text) pairs of one file; an error names the file and its line (or row)."""
    name = path.name
    if name.endswith(".txt"):
        yield default_source, _text_file(path)
        return
    records = _parquet_records(path) if name.endswith(".parquet") else _jsonl_records(path)
    for where, record in records:
        yield _document(record, where, default_source)


def _jsonl_records(path: Path) -> Iterator[tuple[str, object]]:
    """(``<file>:<line>``, record) of each non-blank line, lines counted from 1."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            for n, raw in enumerate(f, 1):
                where = f"{path}:{n}"
                if _cut_off(raw):
                    raise LokiError(f"{where}: the last line has no newline and does not parse: "
                                    "the file may be truncated; restore it, or take it out of "
                                    "--inputs")
                line = _utf8(raw, where)
                if not line.strip():
                    continue
                try:
                    yield where, json.loads(line)
                except json.JSONDecodeError as err:
                    what = err.msg.removesuffix(" at")  # "Invalid control character at"
                    raise LokiError(f"{where}: not a JSON record ({what} at column "
                                    f"{err.colno})") from None
    except (OSError, EOFError, zlib.error) as err:
        raise LokiError(f"cannot read documents from {path}: {err}") from err


def _cut_off(raw: bytes) -> bool:
    """True for a file's last line that has no newline and is no JSON (not even UTF-8): the
    rest of a record lost with the rest of the file, which "not a JSON record" would hide."""
    if raw.endswith(b"\n") or not raw.strip():
        return False
    try:
        json.loads(raw.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError, json.JSONDecodeError
        return True
    return False


def _parquet_records(path: Path) -> Iterator[tuple[str, dict]]:
    """(``<file>: row <n>``, record) of each row, rows counted from 1."""
    from loki._optional import require

    pa = require("pyarrow", "data")
    pq = require("pyarrow.parquet", "data")
    try:
        rows = pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as err:
        raise LokiError(f"cannot read documents from {path}: {err}") from None
    for n, row in enumerate(rows, 1):
        yield f"{path}: row {n}", row


def _text_file(path: Path) -> str:
    """A ``.txt`` file's text (newlines as ``read_text`` gives them); invalid UTF-8 is refused
    naming its line, as in JSONL, not replaced."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        pass
    with path.open("rb") as f:  # a UTF-8 sequence never holds a newline byte: one line is bad
        for n, line in enumerate(f, 1):
            _utf8(line, f"{path}:{n}")
    raise LokiError(f"{path}: not UTF-8 text; save the file as UTF-8")


def _utf8(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise LokiError(f"{where}: not UTF-8 text (byte 0x{data[err.start]:02x} at column "
                        f"{err.start + 1}); save the file as UTF-8") from None


JSON_TYPES = {list: "an array", str: "a string", int: "a number", float: "a number",
              bool: "true/false", type(None): "null"}


def _document(record: object, where: str, default_source: str) -> tuple[str, str]:
    """(source, text) of one record: ``text`` and ``metadata.source`` (or ``source``)."""
    if not isinstance(record, dict):
        raise LokiError(f"{where}: expected an object with a 'text' string, not "
                        f"{JSON_TYPES.get(type(record), type(record).__name__)}")
    text = record.get("text")
    if not isinstance(text, str):
        raise LokiError(f"{where}: the record has no 'text' string")
    meta = record.get("metadata") or {}
    if not isinstance(meta, dict):
        raise LokiError(f"{where}: 'metadata' is not an object")
    source = meta.get("source") or record.get("source") or default_source
    return check_source(source, where), text
