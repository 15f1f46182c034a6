"""The benchmark n-gram index: what the benchmarks contain, as hashed 13-grams of normalised words.

``BenchmarkIndex.from_config`` indexes lm-eval tasks (``lm_eval_tasks``, offline through the
packaged ``*_local`` variants bound to ``data_dir``) and custom JSONL files (``tasks``); see
``loki.filtering.benchmark_items`` for the strings each item gives. Words come from
``loki.text_normalize.match_words`` (the one normaliser the corpus, synthetic and teacher text
are checked with too). An n-gram is stored as a stable 64-bit blake2b hash with a bitmask of the
tasks it came from. ``find(text)`` returns the matched spans of the original text.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from loki.errors import LokiError
from loki.filtering.benchmark_items import field_texts, lm_eval_texts
from loki.text_normalize import VERSION as NORMALISER_VERSION
from loki.text_normalize import match_words

log = logging.getLogger(__name__)
# zero-width characters that some text uses between words: searched both ways (removed inside a
# word, a space between words); the replacement keeps every character offset
_ZERO_WIDTH_AS_SPACE = str.maketrans({c: " " for c in "\u200b\u2060\ufeff"})


def ngram_hash(words: Iterable[str]) -> int:
    return int.from_bytes(hashlib.blake2b(" ".join(words).encode(), digest_size=8).digest(), "little")


@dataclass
class Hit:
    """A run of overlapping matched n-grams: characters [start, end) of the searched text."""

    start: int
    end: int
    tasks: set[str] = field(default_factory=set)
    ngrams: set[int] = field(default_factory=set)


class BenchmarkIndex:
    """n-gram hash -> tasks; see the module docstring."""

    def __init__(self, n: int = 13, fold_confusables: bool = True):
        self.n = n
        self.fold_confusables = fold_confusables
        self.tasks: list[str] = []
        self._table: dict[int, int] = {}  # hash -> bitmask over self.tasks
        self.stats: dict[str, dict[str, int]] = {}
        self.config: dict = {}  # what it was built from (a rebuild is skipped when unchanged)

    def __len__(self) -> int:
        return len(self._table)

    def words(self, text: str) -> list[tuple[str, int, int]]:
        return match_words(text, self.fold_confusables)

    def _task_id(self, name: str) -> int:
        if name not in self.tasks:
            if len(self.tasks) >= 63:
                raise LokiError("BenchmarkIndex holds at most 63 tasks (name a group, e.g. mmlu, "
                                "to count its subtasks as one)")
            self.tasks.append(name)
        return self.tasks.index(name)

    def add_text(self, text: str, task: str) -> int:
        """Index every n-gram of ``text`` under ``task``; returns how many were added."""
        words = [w for w, _, _ in self.words(text)]
        bit = 1 << self._task_id(task)
        count = 0
        for i in range(len(words) - self.n + 1):
            h = ngram_hash(words[i:i + self.n])
            self._table[h] = self._table.get(h, 0) | bit
            count += 1
        return count

    def add_items(self, task: str, items: Iterable[list[str]]) -> Counter:
        """Index each item's strings under ``task``; counts items, n-grams and short items."""
        st = self.stats.setdefault(task, Counter())
        for texts in items:
            st["items"] += 1
            added = sum(self.add_text(t, task) for t in texts)
            st["ngrams"] += added
            if not added:
                st["items_shorter_than_n"] += 1
        return st

    def add_jsonl(self, path: str, task: str, fields: list[str]) -> None:
        """Index one custom task file. A line that is not a JSON object is a LokiError naming
        it (an item left out of the index would not be decontaminated), and so is a file that
        yields no n-grams."""
        keys: set[str] = set()

        def items():
            with open(path, "rb") as f:
                for number, raw in enumerate(f, 1):
                    if not raw.strip():
                        continue
                    try:
                        item = json.loads(raw.decode("utf-8"))
                    except (UnicodeDecodeError, json.JSONDecodeError) as err:
                        cut = "" if raw.endswith(b"\n") else " (the last line, with no newline: " \
                            "the file may be truncated)"
                        raise LokiError(f"{path}:{number}: decontamination task {task!r} has a "
                                        f"line that is not JSON{cut}: {err}; fix it, since an "
                                        "item left out of the index is not decontaminated"
                                        ) from None
                    if not isinstance(item, dict):
                        raise LokiError(f"{path}:{number}: decontamination task {task!r} has a "
                                        f"line that is a JSON {type(item).__name__}, not an "
                                        "object with the item's fields")
                    keys.update(item)
                    yield field_texts(item, fields)

        if not self.add_items(task, items())["ngrams"]:
            raise LokiError(
                f"decontamination task {task!r} ({path}) yields no {self.n}-grams from fields "
                f"{fields}; its items have fields {sorted(keys)}: fix decontam.tasks[].fields")

    def add_lm_eval(self, names: list[str], offline: bool, data_dir: str) -> None:
        """Index lm-eval tasks or groups (a group's subtasks count under the group's name)."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="loki-decontam-tasks-") as bound:
            loaded = load_lm_eval_tasks(names, offline, data_dir, bound)
        for name, tasks in loaded.items():
            for task in tasks:
                self.add_items(name, lm_eval_texts(task))
            if not self.stats.get(name, {}).get("ngrams"):
                raise LokiError(f"decontamination: lm-eval task {name!r} yields no {self.n}-grams "
                                "(its prompts, targets and choices are all shorter than n words)")

    @classmethod
    def from_jsonl(cls, tasks: list, n: int = 13, fold_confusables: bool = True) -> BenchmarkIndex:
        """``tasks``: objects with name, path, fields, optional (``BenchmarkTask``) or dicts.

        A missing required file is a LokiError; a missing optional one is logged and counted
        under ``stats[name]["missing_file"]``.
        """
        index = cls(n, fold_confusables)
        index._add_files(tasks)
        return index

    def _add_files(self, tasks: list) -> None:
        for t in tasks:
            t = t if not isinstance(t, dict) else type("T", (), t)
            name, path = t.name or os.path.splitext(os.path.basename(t.path))[0], t.path
            if not os.path.exists(path):
                if getattr(t, "optional", False):
                    log.warning("decontamination: optional task file %s is absent; skipped", path)
                    self.stats[name] = Counter(missing_file=1)
                    continue
                raise LokiError(f"benchmark task file {path!r} for task {name!r} does not exist "
                                "(mark the task optional: true to skip it)")
            self.add_jsonl(path, name, list(t.fields))

    @classmethod
    def from_config(cls, cfg) -> BenchmarkIndex:
        """The index of a ``DecontamConfig``: its lm-eval tasks, then its custom files."""
        index = cls(cfg.n, cfg.fold_confusables)
        index.config = config_fingerprint(cfg)
        if cfg.lm_eval_tasks:
            index.add_lm_eval(cfg.lm_eval_tasks, cfg.offline, cfg.data_dir)
        index._add_files(cfg.tasks)
        return index

    def find(self, text: str, frequent: set[int] | frozenset = frozenset(),
             exempted: Counter | None = None) -> list[Hit]:
        """Matches in ``text`` (overlapping n-gram matches merged into one hit), in order.

        A match that is one isolated n-gram in ``frequent`` (common in the corpus, and not part of
        a longer match: no neighbouring n-gram matches) is skipped and counted in ``exempted``.
        """
        hits = self._find(text, frequent, exempted)
        if any(c in text for c in "\u200b\u2060\ufeff"):
            # exemptions are counted once, in the first reading
            spaced = self._find(text.translate(_ZERO_WIDTH_AS_SPACE), frequent, None)
            hits = _merge(sorted(hits + spaced, key=lambda h: h.start))
        return hits

    def _find(self, text: str, frequent, exempted: Counter | None) -> list[Hit]:
        words = self.words(text)
        n = self.n
        found = []  # (window index, hash, mask)
        for i in range(len(words) - n + 1):
            h = ngram_hash(w for w, _, _ in words[i:i + n])
            mask = self._table.get(h)
            if mask:
                found.append((i, h, mask))
        hits: list[Hit] = []
        for k, (i, h, mask) in enumerate(found):
            isolated = ((k == 0 or found[k - 1][0] != i - 1)
                        and (k + 1 == len(found) or found[k + 1][0] != i + 1))
            if isolated and h in frequent:
                if exempted is not None:
                    exempted[h] += 1
                continue
            start, end = words[i][1], words[i + n - 1][2]
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

    def ngrams_in(self, text: str) -> dict[int, str]:
        """Indexed n-grams matching *alone* in ``text`` (no neighbouring n-gram matches): hash ->
        the normalised words. These are what the corpus frequency counts: a phrase is common
        when documents use it on its own, not when copies of a whole item repeat it."""
        words = [w for w, _, _ in self.words(text)]
        hashes = [ngram_hash(words[i:i + self.n]) for i in range(len(words) - self.n + 1)]
        hit = [h in self._table for h in hashes]
        return {h: " ".join(words[i:i + self.n]) for i, h in enumerate(hashes)
                if hit[i] and not (i and hit[i - 1]) and not (i + 1 < len(hit) and hit[i + 1])}

    def save(self, path: str) -> None:
        """Written to a temporary file beside ``path``, then renamed (a reader never sees half)."""
        keys = np.fromiter(self._table.keys(), dtype=np.uint64, count=len(self._table))
        masks = np.fromiter(self._table.values(), dtype=np.uint64, count=len(self._table))
        meta = {"n": self.n, "fold_confusables": self.fold_confusables,
                "normaliser": NORMALISER_VERSION, "tasks": self.tasks,
                "stats": self.stats, "config": self.config}
        buf = io.BytesIO()
        np.savez(buf, keys=keys, masks=masks,
                 meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
        from datatrove.io import get_datafolder

        folder = get_datafolder(os.path.dirname(path) or ".")
        name = os.path.basename(path)
        with folder.open(f"{name}.tmp", "wb") as f:
            f.write(buf.getvalue())
        folder.mv(f"{name}.tmp", name)

    @classmethod
    def load(cls, path: str) -> BenchmarkIndex:
        from datatrove.io import get_datafolder

        with get_datafolder(os.path.dirname(path) or ".").open(os.path.basename(path), "rb") as f:
            data = np.load(io.BytesIO(f.read()))
        meta = json.loads(bytes(data["meta"]).decode())
        index = cls(meta["n"], meta.get("fold_confusables", True))
        index.tasks, index.stats = meta["tasks"], meta["stats"]
        index.config = meta.get("config", {})
        if meta.get("normaliser") != NORMALISER_VERSION:
            log.warning("benchmark index %s was built with another text normaliser; rebuild it "
                        "(loki filter) so it matches what it is checked against", path)
        index._table = dict(zip(data["keys"].tolist(), data["masks"].tolist()))
        return index


def _merge(hits: list[Hit]) -> list[Hit]:
    out: list[Hit] = []
    for hit in hits:
        if out and hit.start <= out[-1].end:
            out[-1].end = max(out[-1].end, hit.end)
            out[-1].tasks |= hit.tasks
            out[-1].ngrams |= hit.ngrams
        else:
            out.append(Hit(hit.start, hit.end, set(hit.tasks), set(hit.ngrams)))
    return out


def config_fingerprint(cfg) -> dict:
    """The parts of a ``DecontamConfig`` that decide the index's content."""
    return {"n": cfg.n, "fold_confusables": cfg.fold_confusables,
            "normaliser": NORMALISER_VERSION,
            "lm_eval_tasks": list(cfg.lm_eval_tasks), "offline": cfg.offline,
            "data_dir": str(Path(cfg.data_dir).resolve()) if cfg.data_dir else "",
            "tasks": [[t.name, t.path, list(t.fields), t.optional] for t in cfg.tasks]}


def load_lm_eval_tasks(names: list[str], offline: bool, data_dir: str, bound_dir: str) -> dict:
    """requested name -> its lm-eval task objects (a group expands to every subtask). Offline,
    each name is served by its packaged ``<name>_local`` variant bound to ``data_dir`` (the bound
    task files are written to ``bound_dir``; the loaded tasks no longer need them)."""
    from loki._optional import require
    from loki.eval.local_tasks import packaged_tasks, task_manager

    if offline:
        local = set(packaged_tasks())
        missing = [n for n in names if n not in local and f"{n}_local" not in local]
        if missing:
            raise LokiError(f"decontam.offline: no packaged offline variant of {missing}; "
                            f"offline tasks: {', '.join(sorted(local))}")
        if not data_dir:
            raise LokiError("decontam.offline needs decontam.data_dir "
                            "(<data_dir>/<dataset>/<split>.jsonl)")
        resolved = {n: n if n in local else f"{n}_local" for n in names}
    else:
        resolved = {n: n for n in names}
    tm = task_manager(list(resolved.values()), data_dir or bound_dir, bound_dir)
    get_task_dict = require("lm_eval.tasks", "eval").get_task_dict
    out = {}
    for name, lm_name in resolved.items():
        out[name] = _leaves(get_task_dict([lm_name], tm))
    return out


def _leaves(tree) -> list:
    """The task objects of a (possibly nested) lm-eval task dict."""
    if isinstance(tree, dict):
        return [t for v in tree.values() for t in _leaves(v)]
    return [tree] if hasattr(tree, "doc_to_text") else []
