"""Reading a corpus of text documents: for pruning the tokenizer and measuring it.

A corpus is a list of files, folders or glob patterns, or fsspec URLs (``s3://...``): JSONL /
JSONL.gz with a text field (as datatrove writes them), plain ``.txt`` files (cut into documents of
about ``TXT_DOC_CHARS`` characters at blank lines) and ``datasets.save_to_disk`` folders.
Documents are streamed one at a time, so memory does not grow with the corpus. A deterministic
slice (by CRC32 of the text) can be held out.
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from loki.errors import LokiError

TEXT_SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz", ".txt", ".txt.gz")
TXT_DOC_CHARS = 32_768  # plain-text files are cut into documents of about this size at blank lines


def corpus_files(corpus: Sequence[str]) -> list[Path | str]:
    """Expand files / folders / globs into a sorted list of readable sources (``Path`` for
    local ones, URL strings for fsspec ones such as ``s3://bucket/filtered/*.jsonl.gz``)."""
    out: list[Path | str] = []
    for entry in corpus:
        if "://" in entry:
            out.extend(_remote_files(entry))
            continue
        path = Path(entry)
        if any(ch in entry for ch in "*?["):
            matches = sorted(Path().glob(entry)) if not path.is_absolute() else sorted(
                Path(path.anchor).glob(str(path.relative_to(path.anchor))))
        elif path.is_dir() and not _is_dataset_dir(path):
            matches = sorted(p for p in path.rglob("*") if p.is_file() and _is_text(p))
        elif path.exists():
            matches = [path]
        else:
            raise LokiError(f"corpus entry {entry} does not exist")
        if not matches:
            raise LokiError(f"corpus entry {entry} matches no {'/'.join(TEXT_SUFFIXES)} files")
        out.extend(matches)
    if not out:
        raise LokiError("no corpus given: set `corpus` to files, folders or globs")
    return out


def _remote_files(url: str) -> list[str]:
    import fsspec

    try:
        fs, _, paths = fsspec.core.get_fs_token_paths(url)
    except ImportError as err:
        raise LokiError(f"cannot read {url}: {err}") from err
    found: list[str] = []
    for p in paths:
        if fs.isdir(p):
            found += sorted(q for q in fs.find(p) if q.endswith(TEXT_SUFFIXES))
        elif fs.exists(p):
            found.append(p)
    if not found:
        raise LokiError(f"corpus entry {url} matches no {'/'.join(TEXT_SUFFIXES)} files")
    return [fs.unstrip_protocol(p) for p in found]


def _is_text(path: Path) -> bool:
    return path.name.endswith(TEXT_SUFFIXES)


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
    """Stream document texts from every source, one at a time."""
    for path in files:
        if isinstance(path, str):  # fsspec URL
            import fsspec

            with fsspec.open(path, "rt", compression="infer", encoding="utf-8",
                             errors="replace") as fh:
                if ".jsonl" in path or ".json.gz" in path:
                    yield from _jsonl_texts(fh, path, text_field)
                else:
                    yield from _txt_documents(fh)
            continue
        if path.is_dir():
            datasets = _require_datasets()
            data = datasets.load_from_disk(str(path))
            splits = data.values() if isinstance(data, datasets.DatasetDict) else [data]
            for split in splits:
                if text_field not in split.column_names:
                    raise LokiError(f"dataset {path} has no {text_field!r} column")
                for row in split.select_columns([text_field]):
                    yield row[text_field]
            continue
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
            if ".jsonl" in path.name or ".json.gz" in path.name:
                yield from _jsonl_texts(fh, path, text_field)
            else:
                yield from _txt_documents(fh)


def _require_datasets():
    from loki._optional import require

    return require("datasets", "data")


def _jsonl_texts(fh: io.TextIOBase, path: Path | str, text_field: str) -> Iterator[str]:
    for lineno, line in enumerate(fh, 1):
        if not line.strip():
            continue
        try:
            text = json.loads(line)[text_field]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise LokiError(f"{path}:{lineno}: not a JSON object with a {text_field!r} "
                            f"string ({err.__class__.__name__})") from err
        yield text


def _txt_documents(fh: io.TextIOBase) -> Iterator[str]:
    buf: list[str] = []
    size = 0
    for line in fh:
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
