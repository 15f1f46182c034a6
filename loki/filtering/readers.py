"""Readers that never lose good documents: bad lines are counted with a reason and skipped.

datatrove's ``JsonlReader`` stops reading a file at the first non-UTF-8 byte and logs malformed
lines without counting them; ``RobustJsonlReader`` decodes line by line instead, so one bad line
costs one line. ``InputGuard`` follows any reader and drops empty and huge documents with a reason.
Counters land in the stage's datatrove stats as ``skipped_<reason>``.
"""

from __future__ import annotations

import glob as globlib
import os
import re
import zlib

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.readers.base import BaseDiskReader
from datatrove.pipeline.readers.jsonl import JsonlReader
from datatrove.pipeline.readers.parquet import ParquetReader

from loki.errors import LokiError
from loki.filtering.config import InputConfig


def unreadable(reader: BaseDiskReader, filepath: str, err: BaseException, what: str) -> LokiError:
    """The one-line error for an input file that cannot be read to its end. Skipping it would
    lose its documents silently, so the run stops and names the file."""
    path = reader.data_folder.resolve_paths(filepath)
    detail = " ".join(str(err).split()) or type(err).__name__
    return LokiError(f"input file {path} is not {what} ({detail}): it may be truncated or "
                     "corrupt; restore it, or take it out of input.paths")


class RobustJsonlReader(JsonlReader):
    """JSONL reader that skips non-UTF-8, malformed and non-object lines one at a time.

    A last line with no newline that does not parse is a record cut off with the rest of the
    file (a copy or download cut short), not one bad line: the file is refused, as a cut-off
    ``.jsonl.gz`` is."""

    name = "🐿 Jsonl (robust)"

    def read_file(self, filepath: str) -> DocumentsPipeline:
        try:
            yield from self._read_lines(filepath)
        except (EOFError, OSError, zlib.error) as err:  # e.g. a cut-off .jsonl.gz
            raise unreadable(self, filepath, err, "readable JSONL") from err

    def _read_lines(self, filepath: str) -> DocumentsPipeline:
        import orjson

        with self.data_folder.open(filepath, "rb", compression=self.compression) as f:
            for li, raw in enumerate(f):
                if not raw.strip():
                    continue  # blank separator lines are not documents
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:  # a cut can split a character, too
                    self._refuse_if_cut_off(filepath, li, raw, err)
                    self.stat_update("skipped_non_utf8")
                    continue
                try:
                    data = orjson.loads(line)
                except orjson.JSONDecodeError as err:
                    self._refuse_if_cut_off(filepath, li, raw, err)
                    self.stat_update("skipped_malformed_json")
                    continue
                if not isinstance(data, dict):
                    self.stat_update("skipped_not_an_object")
                    continue
                text = data.get(self.text_key)
                if not isinstance(text, str) or not text.strip():
                    self.stat_update("skipped_empty")
                    continue
                document = self.get_document_from_dict(data, filepath, li)
                if document is not None:
                    yield document

    def _refuse_if_cut_off(self, filepath: str, li: int, raw: bytes, err: ValueError) -> None:
        if not raw.endswith(b"\n"):  # only a file's last line can end without one
            cut = ValueError(f"its last line, {li + 1}, has no newline and does not parse")
            raise unreadable(self, filepath, cut, "complete JSONL") from err


class RobustParquetReader(ParquetReader):
    """datatrove's ParquetReader, with a damaged file named in one line instead of an Arrow
    traceback."""

    name = "📒 Parquet (checked)"

    def read_file(self, filepath: str) -> DocumentsPipeline:
        import pyarrow

        try:
            yield from super().read_file(filepath)
        except (pyarrow.ArrowException, OSError, EOFError) as err:
            raise unreadable(self, filepath, err, "a readable parquet file") from err


class StageReader(JsonlReader):
    """Reads the shards a stage wrote. A stage that kept no documents wrote none: that reads as
    empty (datatrove's reader stops the job), so a Slurm chain runs to its end and the report
    shows the zero."""

    name = "🐿 Jsonl (stage)"

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1
            ) -> DocumentsPipeline:
        if data:
            yield from data
        if self.data_folder.list_files(recursive=self.recursive, glob_pattern=self.glob_pattern):
            yield from super().run(None, rank, world_size)


class PlainTextReader(BaseDiskReader):
    """One document per text file; a file that is not UTF-8 is skipped with a reason."""

    name = "📄 Plain text"

    def read_file(self, filepath: str) -> DocumentsPipeline:
        with self.data_folder.open(filepath, "rb") as f:
            raw = f.read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            self.stat_update("skipped_non_utf8")
            return
        if not text.strip():
            self.stat_update("skipped_empty")
            return
        yield Document(text=text, id=filepath, metadata={})


class InputGuard(PipelineStep):
    """Drops empty and huge documents (any reader), tags the source, counts docs/bytes read."""

    type = "🛡 - GUARD"
    name = "input guard"

    def __init__(self, max_doc_bytes: int, default_source: str):
        super().__init__()
        self.max_doc_bytes = max_doc_bytes
        self.default_source = default_source

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            text = doc.text if isinstance(doc.text, str) else ""
            if not text.strip():
                self.stat_update("skipped_empty")
                continue
            size = len(text.encode("utf-8", errors="replace"))
            if size > self.max_doc_bytes:
                self.stat_update("skipped_huge")
                continue
            # the mixture schedule reads `source`; keep one the input already carries
            doc.metadata["source"] = str(doc.metadata.get("source") or self.default_source)
            yield doc


_GLOB_CHARS = re.compile(r"[*?\[]")


def split_glob(path: str) -> tuple[str, str | None]:
    """``data/raw/*.jsonl`` -> (``data/raw``, ``*.jsonl``); a folder -> (folder, None)."""
    parts = path.split("/")
    for i, part in enumerate(parts):
        if _GLOB_CHARS.search(part):
            return "/".join(parts[:i]) or ".", "/".join(parts[i:])
    if "://" not in path and os.path.isfile(path):
        return os.path.dirname(path) or ".", os.path.basename(path)
    return path, None


def make_readers(cfg: InputConfig) -> list[PipelineStep]:
    """One datatrove reader per configured path (they chain: each yields its shard after the last)."""
    if not cfg.paths:
        raise LokiError("input.paths is empty: name at least one folder, file, glob or dataset")
    readers: list[PipelineStep] = []
    for path in cfg.paths:
        if cfg.format == "hf":
            from datatrove.pipeline.readers import HuggingFaceDatasetReader

            local = os.path.isdir(path)
            readers.append(HuggingFaceDatasetReader(
                path, dataset_options=None if local else {"split": cfg.hf_split},
                load_from_disk=local, text_key=cfg.text_key, id_key=cfg.id_key))
            continue
        folder, pattern = split_glob(path)
        if "://" not in folder and not globlib.glob(os.path.join(folder, pattern or "*")):
            raise LokiError(f"input path {path!r} matches no files")
        kwargs = dict(glob_pattern=pattern, text_key=cfg.text_key, id_key=cfg.id_key)
        if cfg.format == "jsonl":
            readers.append(RobustJsonlReader(folder, **kwargs))
        elif cfg.format == "parquet":
            readers.append(RobustParquetReader(folder, **kwargs))
        else:
            readers.append(PlainTextReader(folder, **kwargs))
    return readers
