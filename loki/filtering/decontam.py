"""Benchmark decontamination: a 13-gram index over benchmark prompts and reference answers.

``BenchmarkIndex`` is a library object (the distillation stage reuses it to check teacher
outputs): build it from task JSONL files, ``find(text)`` the matching spans, ask
``contaminated(text)``, ``save``/``load`` it. Words are lowercased runs of letters/digits
(punctuation stripped); an n-gram is stored as a stable 64-bit blake2b hash with the tasks it
came from.

The GPT-3 rule (Brown et al. 2020, appendix C) as ``decontaminate``: every match is removed with
``window`` characters on each side, the document splits at the removed spans, fragments shorter
than ``min_fragment`` characters are dropped, and a document with more than ``max_hits`` matches
is dropped whole. n-grams found in more than ``max_corpus_docs`` corpus documents are common
phrases, not leaked items, and are ignored (counted by ``DecontamCount`` in a pass before).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.io import DataFolderLike, get_datafolder
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.writers.disk_base import DiskWriter

from loki.errors import LokiError
from loki.filtering.steps import exclusions

log = logging.getLogger(__name__)
_WORD = re.compile(r"[^\W_]+")


def words_with_spans(text: str) -> list[tuple[str, int, int]]:
    """Lowercased words (letters/digits) with their character spans in ``text``."""
    return [(m.group(0).lower(), m.start(), m.end()) for m in _WORD.finditer(text)]


def ngram_hash(words: Iterable[str]) -> int:
    return int.from_bytes(hashlib.blake2b(" ".join(words).encode(), digest_size=8).digest(), "little")


@dataclass
class Hit:
    """A run of overlapping matched n-grams: characters [start, end) of the searched text."""

    start: int
    end: int
    tasks: set[str] = field(default_factory=set)
    ngrams: set[int] = field(default_factory=set)


def _field_texts(item: dict, fields: list[str]) -> list[str]:
    """The strings to index from one benchmark item: each field, lists item by item, and the
    prompt+answer concatenation (so a short answer next to its prompt still matches)."""
    texts: list[str] = []
    for name in fields:
        value = item.get(name)
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, list):
            texts += [v for v in value if isinstance(v, str)]
    gold = item.get("gold", item.get("label"))
    choices = item.get("choices")
    gold_text = None
    if isinstance(choices, list) and isinstance(gold, int) and 0 <= gold < len(choices):
        gold_text = choices[gold] if isinstance(choices[gold], str) else None
    prompt = " ".join(item[f] for f in fields if isinstance(item.get(f), str) and f != "answer")
    answer = item.get("answer") if isinstance(item.get("answer"), str) else gold_text
    if prompt and answer:
        texts.append(f"{prompt} {answer}")
    return texts


class BenchmarkIndex:
    """n-gram hash -> tasks; see the module docstring."""

    def __init__(self, n: int = 13):
        self.n = n
        self.tasks: list[str] = []
        self._table: dict[int, int] = {}  # hash -> bitmask over self.tasks
        self.stats: dict[str, dict[str, int]] = {}

    def __len__(self) -> int:
        return len(self._table)

    def _task_id(self, name: str) -> int:
        if name not in self.tasks:
            if len(self.tasks) >= 63:
                raise LokiError("BenchmarkIndex holds at most 63 tasks")
            self.tasks.append(name)
        return self.tasks.index(name)

    def add_text(self, text: str, task: str) -> int:
        """Index every n-gram of ``text`` under ``task``; returns how many were added."""
        words = [w for w, _, _ in words_with_spans(text)]
        bit = 1 << self._task_id(task)
        count = 0
        for i in range(len(words) - self.n + 1):
            h = ngram_hash(words[i:i + self.n])
            self._table[h] = self._table.get(h, 0) | bit
            count += 1
        return count

    def add_jsonl(self, path: str, task: str, fields: list[str]) -> None:
        """Index one task file; malformed lines and items too short to index are counted."""
        st = self.stats.setdefault(task, Counter())
        with open(path, "rb") as f:
            for raw in f:
                if not raw.strip():
                    continue
                try:
                    item = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError):
                    st["malformed_lines"] += 1
                    continue
                st["items"] += 1
                added = sum(self.add_text(t, task) for t in _field_texts(item, fields))
                st["ngrams"] += added
                if not added:
                    st["items_shorter_than_n"] += 1

    @classmethod
    def from_jsonl(cls, tasks: list, n: int = 13) -> BenchmarkIndex:
        """``tasks``: objects with name, path, fields, optional (``BenchmarkTask``) or dicts.

        A missing required file is a LokiError; a missing optional one is logged and counted
        under ``stats[name]["missing_file"]``.
        """
        index = cls(n)
        for t in tasks:
            t = t if not isinstance(t, dict) else type("T", (), t)
            name, path = t.name or os.path.splitext(os.path.basename(t.path))[0], t.path
            if not os.path.exists(path):
                if getattr(t, "optional", False):
                    log.warning("decontamination: optional task file %s is absent; skipped", path)
                    index.stats[name] = Counter(missing_file=1)
                    continue
                raise LokiError(f"benchmark task file {path!r} for task {name!r} does not exist "
                                "(mark the task optional: true to skip it)")
            index.add_jsonl(path, name, list(t.fields))
        return index

    def find(self, text: str, ignore: set[int] | frozenset = frozenset()) -> list[Hit]:
        """Matches in ``text`` (overlapping n-gram matches merged into one hit), in order."""
        words = words_with_spans(text)
        hits: list[Hit] = []
        for i in range(len(words) - self.n + 1):
            h = ngram_hash(w for w, _, _ in words[i:i + self.n])
            mask = self._table.get(h)
            if not mask or h in ignore:
                continue
            start, end = words[i][1], words[i + self.n - 1][2]
            tasks = {name for b, name in enumerate(self.tasks) if mask >> b & 1}
            if hits and start <= hits[-1].end:
                hits[-1].end = max(hits[-1].end, end)
                hits[-1].tasks |= tasks
                hits[-1].ngrams.add(h)
            else:
                hits.append(Hit(start, end, tasks, {h}))
        return hits

    def contaminated(self, text: str) -> bool:
        return bool(self.find(text))

    def ngram_hashes(self, text: str) -> set[int]:
        """Indexed n-gram hashes present in ``text`` (for corpus frequency counts)."""
        words = [w for w, _, _ in words_with_spans(text)]
        found = set()
        for i in range(len(words) - self.n + 1):
            h = ngram_hash(words[i:i + self.n])
            if h in self._table:
                found.add(h)
        return found

    def save(self, path: str) -> None:
        keys = np.fromiter(self._table.keys(), dtype=np.uint64, count=len(self._table))
        masks = np.fromiter(self._table.values(), dtype=np.uint64, count=len(self._table))
        buf = io.BytesIO()
        np.savez(buf, keys=keys, masks=masks,
                 meta=np.frombuffer(json.dumps({"n": self.n, "tasks": self.tasks,
                                                "stats": self.stats}).encode(), dtype=np.uint8))
        with get_datafolder(os.path.dirname(path) or ".").open(os.path.basename(path), "wb") as f:
            f.write(buf.getvalue())

    @classmethod
    def load(cls, path: str) -> BenchmarkIndex:
        with get_datafolder(os.path.dirname(path) or ".").open(os.path.basename(path), "rb") as f:
            data = np.load(io.BytesIO(f.read()))
        meta = json.loads(bytes(data["meta"]).decode())
        index = cls(meta["n"])
        index.tasks, index.stats = meta["tasks"], meta["stats"]
        index._table = dict(zip(data["keys"].tolist(), data["masks"].tolist()))
        return index


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


class BuildBenchmarkIndex(PipelineStep):
    """Global step: builds and saves the index (fails early on a missing required task file)."""

    type = "🧪 - DECONTAM"
    name = "build benchmark index"

    def __init__(self, tasks: list, n: int, output_path: str):
        super().__init__()
        self.tasks, self.n, self.output_path = tasks, n, output_path

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1):
        index = BenchmarkIndex.from_jsonl(self.tasks, self.n)
        self.stat_update("indexed_ngrams", value=len(index))
        index.save(self.output_path)
        yield from ()


class DecontamCount(PipelineStep):
    """Sharded: how many documents contain each indexed n-gram -> ``counts/<rank>.json``."""

    type = "🧪 - DECONTAM"
    name = "count benchmark n-grams in corpus"

    def __init__(self, index_path: str, counts_folder: DataFolderLike):
        super().__init__()
        self.index_path, self.counts_folder = index_path, counts_folder

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        index = BenchmarkIndex.load(self.index_path)
        counts: Counter = Counter()
        for doc in data:
            counts.update(index.ngram_hashes(doc.text))
            yield doc
        with get_datafolder(self.counts_folder).open(f"{rank:05d}.json", "w") as f:
            json.dump({str(k): v for k, v in counts.items()}, f)


class Decontaminate(PipelineStep):
    """Sharded: applies the GPT-3 rule; fragments become documents ``<id>/part<k>``."""

    type = "🧪 - DECONTAM"
    name = "benchmark decontamination"

    def __init__(self, index_path: str, counts_folder: DataFolderLike, window: int = 200,
                 min_fragment: int = 200, max_hits: int = 10, max_corpus_docs: int = 10,
                 exclusion_writer: DiskWriter | None = None):
        super().__init__()
        self.index_path, self.counts_folder = index_path, counts_folder
        self.window, self.min_fragment, self.max_hits = window, min_fragment, max_hits
        self.max_corpus_docs = max_corpus_docs
        self.exclusion_writer = exclusion_writer

    def _too_common(self) -> set[int]:
        folder = get_datafolder(self.counts_folder)
        total: Counter = Counter()
        for name in folder.list_files(glob_pattern="*.json"):
            with folder.open(name) as f:
                total.update({int(k): v for k, v in json.load(f).items()})
        return {h for h, c in total.items() if c > self.max_corpus_docs}

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        index = BenchmarkIndex.load(self.index_path)
        ignore = self._too_common()
        self.stat_update("ignored_common_ngrams", value=len(ignore), unit="task")
        with exclusions(self.exclusion_writer) as writer:
            for doc in data:
                with self.track_time():
                    hits = index.find(doc.text, ignore)
                if not hits:
                    yield doc
                    continue
                self.stat_update("contaminated_docs")
                for hit in hits:
                    for task in hit.tasks:
                        self.stat_update(f"hits_{task}")
                fragments = decontaminate(doc.text, hits, self.window, self.min_fragment,
                                          self.max_hits)
                if writer:
                    reason = "too_many_hits" if fragments is None else "benchmark_match"
                    removed = " … ".join(doc.text[h.start:h.end] for h in hits)
                    writer.write(Document(text=removed, id=doc.id,
                                          metadata={"filter_reason": reason}), rank)
                if fragments is None:
                    self.stat_update("dropped_too_many_hits")
                    continue
                if not fragments:
                    self.stat_update("dropped_no_fragment_left")
                for k, fragment in enumerate(fragments):
                    yield Document(text=fragment, id=f"{doc.id}/part{k}",
                                   metadata=doc.metadata | {"decontam_part": k})
