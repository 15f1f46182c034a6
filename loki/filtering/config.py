"""Typed configuration of a filter run: its input, executor and folders, the stages' settings
(``loki/filtering/stage_config.py``) gathered in ``FilterConfig`` with the checks across them,
and ``loki filter train-quality``'s ``TrainQualityConfig``.

``loki filter --config experiments/data/<name>.yaml`` fills ``FilterConfig`` through jsonargparse,
so the attribute docstrings below are also the ``--help`` text. Nothing heavy is imported here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from loki.errors import LokiError
from loki.executors import ExecutorConfig
from loki.filtering.stage_config import (
    CleanConfig,
    DecontamConfig,
    DedupConfig,
    EmbedConfig,
    FactualConfig,
    PrototypeConfig,
    QualityConfig,
    SemDedupConfig,
    check_choice,
)

InputFormat = Literal["jsonl", "parquet", "text", "hf"]


@dataclass
class InputConfig:
    """Where raw documents come from."""

    paths: list[str] = field(default_factory=list)
    """Folders, files, globs (``data/raw/*.jsonl``), fsspec URLs, or (format hf) a dataset id or a
    local ``datasets.save_to_disk`` directory."""
    format: InputFormat = "jsonl"
    """jsonl | parquet | text (one document per file) | hf."""
    text_key: str = "text"
    """Field holding the document text."""
    id_key: str = "id"
    """Field holding the document id (a path-based id is made when absent)."""
    source: str = "web"
    """Source tag given to documents that carry none (``web`` or ``synthetic``)."""
    max_doc_bytes: int = 2_000_000
    """Documents larger than this (UTF-8 bytes) are skipped and counted as ``huge``."""
    hf_split: str = "train"
    """Split to read when ``format: hf`` loads a hub dataset id."""

    def __post_init__(self) -> None:
        check_choice("input.format", self.format, InputFormat)


@dataclass
class FilterConfig:
    """The whole filter run (``loki filter --config experiments/data/<name>.yaml``)."""

    input: InputConfig = field(default_factory=InputConfig)
    """Raw documents."""
    output_dir: str = "data/filtered"
    """Final JsonlWriter shards (``*.jsonl.gz``) and the report go here."""
    work_dir: str = ""
    """Intermediate stage outputs, logs and completion markers (default: <output_dir>.work, beside
    output_dir: never inside it, where readers of output_dir would find removed documents)."""
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    """Where the stages run: the datatrove executor."""
    clean: CleanConfig = field(default_factory=CleanConfig)
    """Stage 1, clean: normalization, boilerplate lines, length bounds, Gopher/C4 heuristics."""
    dedup: DedupConfig = field(default_factory=DedupConfig)
    """Stage 2, dedup: exact duplicates and MinHash near duplicates."""
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    """Stage 3, embed: one embedding per document, read by stages 4 to 6."""
    semdedup: SemDedupConfig = field(default_factory=SemDedupConfig)
    """Stage 4, semdedup: SemDeDup within k-means clusters."""
    prototypes: PrototypeConfig = field(default_factory=PrototypeConfig)
    """Stage 5, prototypes: SSL-prototype pruning with the same k-means."""
    quality: QualityConfig = field(default_factory=QualityConfig)
    """Stage 6, quality: the embedding quality classifier."""
    factual: FactualConfig = field(default_factory=FactualConfig)
    """Stage 7, factual: removal of precise factual statements."""
    decontam: DecontamConfig = field(default_factory=DecontamConfig)
    """Stage 8, decontam: 13-gram benchmark decontamination."""
    report_examples: int = 3
    """Removed documents shown per stage in the report."""

    def __post_init__(self) -> None:
        if not self.work_dir:
            self.work_dir = f"{self.output_dir.rstrip('/')}.work"
        if _within(self.work_dir, self.output_dir):
            raise LokiError(f"work_dir {self.work_dir} is inside output_dir {self.output_dir}: "
                            "readers of output_dir (loki tokenize, loki tokenizer prune) would "
                            "take its intermediate stages and removed documents for filtered "
                            "text; put it beside output_dir (the default is <output_dir>.work)")

    @property
    def needs_embeddings(self) -> bool:
        return self.semdedup.enabled or self.prototypes.enabled or self.quality.enabled


def _within(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or under it (local paths resolved; URLs compared as text)."""
    if "://" not in path and "://" not in folder:
        path, folder = os.path.abspath(path), os.path.abspath(folder)
    path, folder = path.rstrip("/"), folder.rstrip("/")
    return path == folder or path.startswith(folder + "/")


@dataclass
class TrainQualityConfig:
    """``loki filter train-quality``: fit the quality head on labelled JSONL."""

    data: str = "seed"
    """JSONL with ``text`` and ``label`` (0/1) or ``score`` (0-5); ``seed`` = packaged seed set."""
    output: str = "data/quality/model.json"
    """Where the trained head (JSON) is written."""
    embedder: str = "minilm"
    """Embedding model (see EmbedConfig.model)."""
    max_chars: int = 2000
    """Head of each text that is embedded; keep equal to the pipeline's embed.max_chars."""
    label_key: str = "label"
    """Binary label field (LogisticRegression head)."""
    score_key: str = "score"
    """0-5 score field (Ridge head) used when label_key is absent."""
    holdout: float = 0.2
    """Fraction held out to report accuracy / error, in [0, 1) (0: no held-out metrics)."""
    seed: int = 0
    """Split seed."""
    overwrite: bool = False
    """Replace an existing head at ``output`` (otherwise an existing head is refused)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.holdout < 1.0:
            raise LokiError(f"holdout must be in [0, 1) (the rest trains the head), not "
                            f"{self.holdout}")
