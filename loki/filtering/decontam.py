"""Benchmark decontamination with the GPT-3 rule, as datatrove steps.

The index (``BenchmarkIndex``, in ``loki.filtering.benchmark_index``; re-exported here because the
distillation stage and the demo reuse it) holds the 13-grams of what the benchmarks evaluate.

The GPT-3 rule (Brown et al. 2020, appendix C) as ``decontaminate``: every match is removed with
``window`` characters on each side, the document splits at the removed spans, fragments shorter
than ``min_fragment`` characters are dropped, and a document with more than ``max_hits`` matches
is dropped whole.

Frequent n-grams: a benchmark 13-gram that matches *alone* (no neighbouring n-gram of the
document matches) in more corpus documents than ``max(max_corpus_docs, frequent_fraction *
documents)`` is a common phrase ("in the united states ..."), and is exempt where it matches
alone. A longer match is removed however many documents copy it, and copies of an item do not
make its own n-grams common: only lone matches are counted. The frequent n-grams, with their
document counts, are written for the report.
"""

from __future__ import annotations

import json
import math
from collections import Counter

from datatrove.data import Document, DocumentsPipeline
from datatrove.io import DataFolderLike, get_datafolder
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.writers.disk_base import DiskWriter

from loki.filtering.benchmark_index import BenchmarkIndex, Hit, config_fingerprint, ngram_hash
from loki.filtering.steps import exclusions

__all__ = ["BenchmarkIndex", "Hit", "ngram_hash", "decontaminate", "build_index",
           "BuildBenchmarkIndex", "DecontamCount", "DecontamFrequent", "Decontaminate"]


def decontaminate(text: str, hits: list[Hit], window: int = 200, min_fragment: int = 200,
                  max_hits: int = 10) -> list[str] | None:
    """The GPT-3 rule: surviving fragments of ``text``, or None when the document is dropped."""
    if len(hits) > max_hits:
        return None
    if not hits:
        return [text]
    fragments, pos = [], 0
    for hit in hits:
        cut_start, cut_end = max(0, hit.start - window), min(len(text), hit.end + window)
        if cut_start > pos:
            fragments.append(text[pos:cut_start])
        pos = max(pos, cut_end)
    fragments.append(text[pos:])
    return [f for f in fragments if len(f) >= min_fragment]


def build_index(cfg, work_dir: str) -> BenchmarkIndex | None:
    """Builds and saves ``<work_dir>/decontam/index.npz`` unless the saved one was built from the
    same configuration; returns the new index (None when the saved one is kept). Bad task
    configuration is a LokiError raised before anything is written."""
    path = f"{work_dir.rstrip('/')}/decontam/index.npz"
    folder = get_datafolder(f"{work_dir.rstrip('/')}/decontam")
    if folder.exists("index.npz"):
        try:
            if BenchmarkIndex.load(path).config == config_fingerprint(cfg):
                return None
        except (OSError, ValueError, KeyError):
            pass  # unreadable: rebuilt
    index = BenchmarkIndex.from_config(cfg)
    index.save(path)
    return index


class BuildBenchmarkIndex(PipelineStep):
    """Global step: builds the index (kept when already built from the same configuration)."""

    type = "🧪 - DECONTAM"
    name = "build benchmark index"

    def __init__(self, cfg, work_dir: str):
        super().__init__()
        self.cfg, self.work_dir = cfg, work_dir

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1):
        index = build_index(self.cfg, self.work_dir)
        if index is not None:
            self.stat_update("indexed_ngrams", value=len(index))
        yield from ()


class DecontamCount(PipelineStep):
    """Sharded: in how many documents each indexed n-gram matches alone -> ``counts/<rank>.json``."""

    type = "🧪 - DECONTAM"
    name = "count benchmark n-grams in corpus"

    def __init__(self, index_path: str, counts_folder: DataFolderLike):
        super().__init__()
        self.index_path, self.counts_folder = index_path, counts_folder

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        index = BenchmarkIndex.load(self.index_path)
        counts: Counter = Counter()
        texts: dict[int, str] = {}
        docs = 0
        for doc in data:
            docs += 1
            found = index.ngrams_in(doc.text)
            counts.update(found.keys())
            texts.update(found)
            yield doc
        with get_datafolder(self.counts_folder).open(f"{rank:05d}.json", "w") as f:
            json.dump({"docs": docs, "ngrams": {str(h): [c, texts[h]] for h, c in counts.items()}},
                      f)


class DecontamFrequent(PipelineStep):
    """Global: merges the counts, writes the frequent n-grams (``frequent.json``) for the filter
    step and the report: corpus size, threshold, and each n-gram with its document count."""

    type = "🧪 - DECONTAM"
    name = "frequent benchmark n-grams"

    def __init__(self, counts_folder: DataFolderLike, output_path: str, min_docs: int,
                 fraction: float):
        super().__init__()
        self.counts_folder, self.output_path = counts_folder, output_path
        self.min_docs, self.fraction = min_docs, fraction

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1):
        folder = get_datafolder(self.counts_folder)
        docs, counts, texts = 0, Counter(), {}
        for name in folder.list_files(glob_pattern="*.json"):
            with folder.open(name) as f:
                part = json.load(f)
            docs += part["docs"]
            for h, (c, text) in part["ngrams"].items():
                counts[h] += c
                texts[h] = text
        threshold = max(self.min_docs, math.ceil(self.fraction * docs))
        frequent = [{"hash": h, "ngram": texts[h], "docs": c} for h, c in counts.most_common()
                    if c > threshold]
        out = {"corpus_docs": docs, "threshold": threshold, "frequent": frequent}
        self.stat_update("frequent_ngrams", value=len(frequent), unit="task")
        with get_datafolder(self.output_path.rsplit("/", 1)[0]).open(
                self.output_path.rsplit("/", 1)[1], "w") as f:
            json.dump(out, f, indent=1)
        yield from ()


class Decontaminate(PipelineStep):
    """Sharded: applies the GPT-3 rule; fragments become documents ``<id>/part<k>``.

    Stats (the report reads them): ``hits_<task>`` (matched spans); ``contaminated_docs``; ``replaced_by_fragments`` (documents cut,
    whose ``fragments_written`` replace them); ``dropped_too_many_hits``,
    ``dropped_no_fragment_left``; ``chars_removed``; ``exempted_matches``; and per task
    ``task_<name>_<counter>`` of the same (a document matching two tasks counts for each).
    """

    type = "🧪 - DECONTAM"
    name = "benchmark decontamination"

    def __init__(self, index_path: str, frequent_path: str, window: int = 200,
                 min_fragment: int = 200, max_hits: int = 10,
                 exclusion_writer: DiskWriter | None = None):
        super().__init__()
        self.index_path, self.frequent_path = index_path, frequent_path
        self.window, self.min_fragment, self.max_hits = window, min_fragment, max_hits
        self.exclusion_writer = exclusion_writer

    def _frequent(self) -> set[int]:
        folder, name = self.frequent_path.rsplit("/", 1)
        with get_datafolder(folder).open(name) as f:
            return {int(row["hash"]) for row in json.load(f)["frequent"]}

    def _count(self, tasks: set[str], key: str, value: int = 1) -> None:
        self.stat_update(key, value=value)
        for task in tasks:
            self.stat_update(f"task_{task}_{key}", value=value)

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        index = BenchmarkIndex.load(self.index_path)
        frequent = self._frequent()
        exempted: Counter = Counter()
        with exclusions(self.exclusion_writer) as writer:
            for doc in data:
                with self.track_time():
                    hits = index.find(doc.text, frequent, exempted)
                if not hits:
                    yield doc
                    continue
                tasks = set().union(*(hit.tasks for hit in hits))
                for hit in hits:
                    for task in hit.tasks:
                        self.stat_update(f"hits_{task}")
                self._count(tasks, "contaminated_docs")
                fragments = decontaminate(doc.text, hits, self.window, self.min_fragment,
                                          self.max_hits)
                kept = sum(len(f) for f in fragments or [])
                self._count(tasks, "chars_removed", len(doc.text) - kept)
                if writer:
                    reason = "too_many_hits" if fragments is None else "benchmark_match"
                    removed = " … ".join(doc.text[h.start:h.end] for h in hits)
                    writer.write(Document(text=removed, id=doc.id, metadata={
                        "filter_reason": reason, "tasks": sorted(tasks)}), rank)
                if fragments is None:
                    self._count(tasks, "dropped_too_many_hits")
                    continue
                if not fragments:
                    self._count(tasks, "dropped_no_fragment_left")
                    continue
                self._count(tasks, "replaced_by_fragments")
                self._count(tasks, "fragments_written", len(fragments))
                for k, fragment in enumerate(fragments):
                    yield Document(text=fragment, id=f"{doc.id}/part{k}",
                                   metadata=doc.metadata | {"decontam_part": k})
        if exempted:
            self.stat_update("exempted_matches", value=sum(exempted.values()))
