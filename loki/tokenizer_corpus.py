"""Reading a corpus of text documents: for pruning the tokenizer and measuring it.

A corpus is a list of files, folders or glob patterns, or fsspec URLs (``s3://...``): JSONL /
JSONL.gz with a text field (as datatrove writes them), Parquet files with a text column, plain
``.txt`` files (cut into documents of about ``TXT_DOC_CHARS`` characters at blank lines) and
``datasets.save_to_disk`` folders. Files of other types are refused, not read as text. Documents
are streamed one at a time, so memory does not grow with the corpus. Text must be UTF-8 and every
document needs a text string: anything else is an error naming the file and line (or row), never
replaced or skipped. A deterministic slice (by CRC32 of the text) can be held out.
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO

from loki.errors import LokiError

TEXT_SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz", ".txt", ".txt.gz", ".parquet")
TXT_DOC_CHARS = 32_768  # plain-text files are cut into documents of about this size at blank lines


# The report `loki filter` writes beside its output shards: expected there, so not listed as a
# file left out of a corpus that names the filter's output folder.
_BESIDE = ("filter_report.json", "filter_report.md")


def corpus_files(corpus: Sequence[str]) -> list[Path | str]:
    """Expand files / folders / globs into a list of readable sources (``Path`` for local ones,
    URL strings for fsspec ones such as ``s3://bucket/filtered/*.jsonl.gz``), each entry's in
    sorted order. A file of another type is refused; a file listed twice is read once (said on
    the console)."""
    out: list[Path | str] = []
    first: dict[Path | str, str] = {}  # every file read, by the name it was first given
    repeated: dict[Path | str, str] = {}
    for entry in corpus:
        for source in _expand(entry):
            key = source if isinstance(source, str) else source.resolve()
            if key in first:
                repeated.setdefault(key, first[key])
            else:
                first[key] = str(source)
                out.append(source)
    if not out:
        raise LokiError("no corpus given: set `corpus` to files, folders or globs")
    if repeated:
        print(f"corpus: {len(repeated)} file(s) listed more than once, read once: "
              + ", ".join(repeated.values()))
    return out


def _expand(entry: str) -> list[Path | str]:
    if "://" in entry:
        return _remote_files(entry)
    path = Path(entry)
    if any(ch in entry for ch in "*?["):
        matches = sorted(Path().glob(entry)) if not path.is_absolute() else sorted(
            Path(path.anchor).glob(str(path.relative_to(path.anchor))))
    elif path.exists():
        matches = [path]
    else:
        raise LokiError(f"corpus entry {entry} does not exist")
    found: list[Path | str] = []
    for m in matches:
        if m.is_dir() and not _is_dataset_dir(m):
            inner = sorted(p for p in m.rglob("*") if p.is_file())
            found += [p for p in inner if _is_text(p.name)]
            others = [p.name for p in inner if not _is_text(p.name) and p.name not in _BESIDE]
            if others:
                print(f"corpus: {len(others)} file(s) in {m} not of the types read are left out: "
                      + ", ".join(others[:5]) + (", ..." if len(others) > 5 else ""))
        elif m.is_dir() or _is_text(m.name):
            found.append(m)
        else:
            raise LokiError(f"corpus file {m} is not one of the types read: "
                            f"{', '.join(TEXT_SUFFIXES)} or a datasets.save_to_disk folder")
    if not found:
        raise LokiError(f"corpus entry {entry} matches no {'/'.join(TEXT_SUFFIXES)} files")
    return found


def _remote_files(url: str) -> list[str]:
    import fsspec

    try:
        fs, _, paths = fsspec.core.get_fs_token_paths(url)
    except ImportError as err:
        raise LokiError(f"cannot read {url}: {err}") from err
    found: list[str] = []
    for p in paths:
        if fs.isdir(p):
            found += sorted(q for q in fs.find(p) if _is_text(q))
        elif not fs.exists(p):
            continue
        elif _is_text(p):
            found.append(p)
        else:
            raise LokiError(f"corpus file {fs.unstrip_protocol(p)} is not one of the types read: "
                            f"{', '.join(TEXT_SUFFIXES)}")
    if not found:
        raise LokiError(f"corpus entry {url} matches no {'/'.join(TEXT_SUFFIXES)} files")
    return [fs.unstrip_protocol(p) for p in found]


def _is_text(name: str) -> bool:
    return name.endswith(TEXT_SUFFIXES)


def _is_dataset_dir(path: Path) -> bool:
    return (path / "dataset_info.json").exists() or (path / "state.json").exists() or (
        path / "dataset_dict.json").exists()


def corpus_manifest(files: Sequence[Path | str]) -> list[dict]:
    """What was read: enough to notice a changed corpus (path, size, mtime)."""
    out = []
    for f in files:
        if isinstance(f, str):
            import fsspec

            fs, path = fsspec.core.url_to_fs(f)
            info = fs.info(path)
            out.append({"path": f, "bytes": info.get("size"),
                        "mtime_ns": str(info.get("mtime") or info.get("LastModified")
                                        or info.get("ETag") or info.get("created") or "")})
            continue
        paths = [f] if f.is_file() else sorted(p for p in f.rglob("*") if p.is_file())
        out.append({"path": str(f), "bytes": sum(p.stat().st_size for p in paths),
                    "mtime_ns": max((p.stat().st_mtime_ns for p in paths), default=0)})
    return out


def iter_documents(files: Sequence[Path | str], text_field: str = "text") -> Iterator[str]:
    """Stream document texts from every source, one at a time. A document without a text string
    is an error naming its file and line (or row); an empty text is yielded as ``""``."""
    for source in files:
        if isinstance(source, Path) and source.is_dir():
            yield from _dataset_texts(source, text_field)
            continue
        name = source if isinstance(source, str) else source.name
        if name.endswith(".parquet"):
            yield from _parquet_texts(source, text_field)
            continue
        try:
            with _open(source, decompress=True) as fh:
                lines = _utf8_lines(fh, source)
                if name.endswith((".jsonl", ".jsonl.gz", ".json.gz")):
                    yield from _jsonl_texts(lines, source, text_field)
                else:
                    yield from _txt_documents(lines)
        except (OSError, EOFError, zlib.error) as err:
            raise LokiError(f"cannot read {source}: {_reason(err)}; it is cut off or damaged: "
                            "re-create it or leave it out of the corpus") from None


def _reason(err: BaseException) -> str:
    return " ".join(str(err).split()).rstrip(".") or type(err).__name__


def _open(source: Path | str, decompress: bool) -> AbstractContextManager[IO[bytes]]:
    if isinstance(source, str):  # fsspec URL
        import fsspec

        return fsspec.open(source, "rb", compression="infer" if decompress else None)
    return gzip.open(source, "rb") if decompress and source.suffix == ".gz" else open(source, "rb")


def _utf8_lines(fh: IO[bytes], source: Path | str) -> Iterator[tuple[int, str]]:
    """``(line number, line)``: invalid UTF-8 is refused where it is, never replaced."""
    for lineno, raw in enumerate(fh, 1):
        try:
            yield lineno, raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise LokiError(f"{source}:{lineno}: not valid UTF-8 ({err.reason} at byte "
                            f"{err.start} of the line); re-encode the file as UTF-8") from None


def _text(value: object, where: str, text_field: str) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        raise LokiError(f"{where}: {text_field!r} is missing or null; every document needs a "
                        "text string")
    raise LokiError(f"{where}: {text_field!r} is {type(value).__name__} {value!r:.40}, "
                    "not a string")


def _dataset_texts(path: Path, text_field: str) -> Iterator[str]:
    datasets = _require("datasets")
    data = datasets.load_from_disk(str(path))
    splits = data.items() if isinstance(data, datasets.DatasetDict) else [("", data)]
    for name, split in splits:
        if text_field not in split.column_names:
            raise LokiError(f"dataset {path} has no {text_field!r} column")
        where = f"{path}{f' split {name}' if name else ''} row"
        for k, row in enumerate(split.select_columns([text_field])):
            yield _text(row[text_field], f"{where} {k}", text_field)


def _parquet_texts(source: Path | str, text_field: str) -> Iterator[str]:
    pa = _require("pyarrow")
    pq = _require("pyarrow.parquet")
    try:
        with _open(source, decompress=False) as fh:
            table = pq.ParquetFile(fh)
            if text_field not in table.schema_arrow.names:
                raise LokiError(f"{source} has no {text_field!r} column")
            k = 0
            for batch in table.iter_batches(columns=[text_field]):
                for value in batch.column(0).to_pylist():
                    yield _text(value, f"{source} row {k}", text_field)
                    k += 1
    except (OSError, UnicodeDecodeError, pa.ArrowException) as err:
        raise LokiError(f"cannot read {source}: {_reason(err)}; it is cut off or damaged: "
                        "re-create it or leave it out of the corpus") from None


def _require(module: str):
    from loki._optional import require

    return require(module, "data")


def _jsonl_texts(lines: Iterator[tuple[int, str]], source: Path | str,
                 text_field: str) -> Iterator[str]:
    for lineno, line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise LokiError(f"{source}:{lineno}: not a JSON object with a {text_field!r} "
                            f"string ({err})") from None
        if not isinstance(record, dict):
            raise LokiError(f"{source}:{lineno}: a JSON {type(record).__name__}, not an object "
                            f"with a {text_field!r} string")
        yield _text(record.get(text_field), f"{source}:{lineno}", text_field)


def _txt_documents(lines: Iterator[tuple[int, str]]) -> Iterator[str]:
    buf: list[str] = []
    size = 0
    for _, raw in lines:
        # "\r\n" and a lone "\r" end lines as "\n", as a file opened in text mode reads them
        for line in io.StringIO(raw, newline=None) if "\r" in raw else (raw,):
            buf.append(line)
            size += len(line)
            if size >= TXT_DOC_CHARS and not line.strip():
                yield "".join(buf)
                buf, size = [], 0
    if buf:
        yield "".join(buf)


def is_held_out(text: str, fraction: float) -> bool:
    return zlib.crc32(text.encode("utf-8", "replace")) % 10_000 < fraction * 10_000


def read_texts(corpus: Sequence[str], max_bytes: int, text_field: str = "text") -> list[str]:
    texts, size = [], 0
    for text in iter_documents(corpus_files(corpus), text_field):
        if size >= max_bytes:
            break
        texts.append(text)
        size += len(text.encode("utf-8", "replace"))
    return texts
