"""The datatrove task of ``loki tokenize`` (its own module: datatrove is imported only to run it)."""

from __future__ import annotations

from pathlib import Path

from datatrove.pipeline.base import PipelineStep

from loki.data.tokenize import tokenize_part
from loki.errors import LokiError


class TokenizeTask(PipelineStep):
    """A datatrove task of ``loki tokenize``: one contiguous run of the input files."""

    type = "🔤 - TOKENIZE"
    name = "tokenize files"

    def __init__(self, parts: list[list[str]], staging: str, tokenizer: str, shard_tokens: int,
                 default_source: str, batch_documents: int, inputs: list[str]):
        super().__init__()
        self.parts, self.staging, self.tokenizer = parts, staging, tokenizer
        self.shard_tokens, self.default_source = shard_tokens, default_source
        self.batch_documents, self.inputs = batch_documents, inputs

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        folder = Path(self.staging) / "parts" / f"{rank:05d}"
        try:
            with self.track_time("task"):  # figures per task, not per document
                summary = tokenize_part([Path(f) for f in self.parts[rank]], folder,
                                        self.tokenizer, self.shard_tokens, self.default_source,
                                        self.batch_documents, self.inputs)
        except LokiError as err:  # bad input: reported once by the caller as a one-line error
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "error.txt").write_text(str(err))
            self.stat_update("failed")
            return
        for counts in summary.values():
            self.stat_update("documents", value=counts["documents"], unit="task")
            self.stat_update("tokens", value=counts["tokens"], unit="task")
            self.stat_update("empty_documents_skipped", value=counts["empty"], unit="task")
        yield from ()
