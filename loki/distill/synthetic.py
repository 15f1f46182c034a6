"""Machine-generated text for the early part of training.

The paper mixes "a small portion of machine-generated text in the early stages of training to aid
in learning basic language concepts". Here a teacher writes short explanatory passages about
topics taken from the training corpus (document titles); each passage (with its prompt) goes
through the same check-and-regenerate loop as every other teacher output
(``loki.distill.leaks``), and is written as filter-style ``*.jsonl.gz`` with
``metadata.source = "synthetic"``, then tokenized into the ``synthetic`` source, so the data
module's mixture schedule decides when it is seen.

Two entry points: ``write_synthetic`` (one call, one file: the CPU demo) and the production path
``loki distill synthetic --config experiments/distill/synthetic.yaml`` (``run_synthetic``): the
topics split over ``executor.tasks`` tasks on the same datatrove executor as ``loki distill
build``, each task writing its own file and marker (a rerun skips finished tasks), a benchmark
index required, then the whole set tokenized with the student tokenizer.
"""

from __future__ import annotations

import gzip
import json
import shutil
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from loki.distill.leaks import generate_checked, load_index
from loki.distill.teachers import Teacher
from loki.errors import LokiError
from loki.executors import ExecutorConfig

TEMPLATES = (
    "Here is a short, simple explanation of {topic} for a curious student.\n\n",
    "{topic}: an introduction in plain words.\n\n",
    "A brief encyclopedia-style paragraph about {topic}.\n\n",
)


def topics_from_documents(paths: Iterable[str | Path], limit: int) -> list[str]:
    """The first line (the title) of each JSONL document, de-duplicated, in file order."""
    seen: dict[str, None] = {}
    for path in paths:
        with open(path) as f:
            for line in f:
                title = json.loads(line)["text"].strip().split("\n", 1)[0].strip()
                if 2 <= len(title) <= 80:
                    seen.setdefault(title, None)
                if len(seen) >= limit:
                    return list(seen)
    return list(seen)


def write_synthetic(
    teacher: Teacher, topics: list[str], output: str | Path, index: Any | None = None,
    seed: int = 0, min_chars: int = 200, max_tries: int = 3,
) -> dict[str, Any]:
    """Generate one passage per topic; drop benchmark copies and passages under ``min_chars``.

    Returns counts (written, dropped per reason) and the teacher identity; the same dict goes to
    ``<output>/synthetic_report.json``."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    counts = _write_passages(teacher, topics, range(len(topics)), output / "00000.jsonl.gz",
                             index, seed, min_chars, max_tries)
    report = {**counts, "teacher": teacher.identity()}
    (output / "synthetic_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _write_passages(teacher: Teacher, topics: list[str], numbers: Iterable[int], path: Path,
                    index: Any | None, seed: int, min_chars: int, max_tries: int,
                    ) -> dict[str, int]:
    """Passages for ``topics`` (global numbers ``numbers``) -> ``path`` (written whole, then
    renamed into place); benchmark copies regenerated up to ``max_tries`` times, then dropped."""
    numbers = list(numbers)
    prompts = [TEMPLATES[i % len(TEMPLATES)].format(topic=t) for i, t in zip(numbers, topics)]
    checked = generate_checked(
        lambda rows, s: teacher.generate([prompts[r] for r in rows], [[] for _ in rows], s),
        prompts, lambda gen: ([], (gen.text or "").strip()), lambda attempt: seed + attempt,
        index, max_tries, teacher.name)
    counts = {"topics": len(topics), "written": 0, "too_short": 0,
              "benchmark_copy": len(checked.dropped), "regenerations": checked.regenerations}
    tmp = path.with_name(path.name + ".part")
    with gzip.open(tmp, "wt") as f:
        for i, topic, prompt, kept in zip(numbers, topics, prompts, checked.kept):
            if kept is None:
                continue
            text, used_seed = kept[2], kept[3]
            if len(text) < min_chars:
                counts["too_short"] += 1
                continue
            doc = {"id": f"synthetic-{i}", "text": f"{topic}\n\n{text}",
                   "metadata": {"source": "synthetic", "teacher": teacher.name,
                                "prompt": prompt, "seed": used_seed}}
            f.write(json.dumps(doc, ensure_ascii=False) + "\n")
            counts["written"] += 1
    tmp.rename(path)
    return counts


# ---------------------------------------------------------------------- production path
@dataclass
class SyntheticDecontam:
    """The benchmark check of synthetic passages (required: they are training text)."""

    index: str | None = None
    """BenchmarkIndex file (``.npz``) from ``loki filter``'s decontamination stage."""
    max_tries: int = 3
    """Generations per topic (the first plus regenerations) before it is dropped."""


@dataclass
class SyntheticConfig:
    """``loki distill synthetic``: teacher passages about corpus topics -> the synthetic source."""

    output: str = "data/synthetic"
    """Folder: jsonl/ (passages per task), shards/synthetic/ (tokens), synthetic_report.json."""
    topics: list[str] = field(default_factory=list)
    """Raw JSONL files / globs whose documents' first lines (titles) are the topics."""
    num_topics: int = 1000
    """Topics taken (de-duplicated, in file order)."""
    teacher: dict[str, Any] = field(default_factory=dict)
    """The teacher: ``kind`` (hf, openai, loki) and that class's fields."""
    tokenizer: str | None = None
    """Student tokenizer spec the passages are tokenized with."""
    decontam: SyntheticDecontam = field(default_factory=SyntheticDecontam)
    """Benchmark check and regeneration."""
    min_chars: int = 200
    """Shorter passages are dropped."""
    seed: int = 0
    """Base sampling seed (each task and try derives its own)."""
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    """datatrove executor (local, slurm, ray) and the number of tasks."""

    def __post_init__(self) -> None:
        if isinstance(self.decontam, dict):
            self.decontam = SyntheticDecontam(**self.decontam)
        if isinstance(self.executor, dict):
            self.executor = ExecutorConfig(**self.executor)
        if not self.teacher:
            raise LokiError("distill synthetic: set `teacher` (kind and its fields)")
        if not self.topics:
            raise LokiError("distill synthetic: `topics` lists no raw JSONL files")
        if not self.decontam.index:
            raise LokiError("distill synthetic: set decontam.index (the benchmark index from "
                            "`loki filter`): synthetic text is training text")
        if not self.tokenizer:
            raise LokiError("distill synthetic: set `tokenizer` (the student's)")
        if self.decontam.max_tries < 1 or self.num_topics < 1:
            raise LokiError("decontam.max_tries and num_topics must be >= 1")


def _topics(cfg: SyntheticConfig) -> list[str]:
    from loki.data.tokenize import expand_inputs

    return topics_from_documents(expand_inputs(cfg.topics), cfg.num_topics)


def synthetic_task(cfg: SyntheticConfig, rank: int = 0, world_size: int = 1) -> dict:
    """Task ``rank``: topics ``rank, rank + world_size, ...`` -> ``jsonl/<rank>.jsonl.gz``."""
    folder = Path(cfg.output) / "jsonl"
    marker = folder / f"{rank:05d}.json"
    if marker.is_file():
        return json.loads(marker.read_text())
    from loki.distill.teachers import make_teacher

    start = time.perf_counter()
    topics = _topics(cfg)
    numbers = list(range(rank, len(topics), world_size))
    teacher = make_teacher(cfg.teacher)
    if hasattr(teacher, "share_budget"):
        teacher.share_budget(world_size)
    folder.mkdir(parents=True, exist_ok=True)
    counts = _write_passages(teacher, [topics[i] for i in numbers], numbers,
                             folder / f"{rank:05d}.jsonl.gz", load_index(cfg.decontam.index),
                             cfg.seed * 1_000_003 + rank * 7_919, cfg.min_chars,
                             cfg.decontam.max_tries)
    info = {"report": {"synthetic": counts}, "rank": rank,
            "seconds": round(time.perf_counter() - start, 2)}
    tmp = marker.with_name(marker.name + ".part")
    tmp.write_text(json.dumps(info, indent=1) + "\n")
    tmp.rename(marker)
    return info


def run_synthetic(cfg: SyntheticConfig) -> dict:
    """Every task through the executor, then the report and the token shards."""
    from loki.distill.executor import run_tasks

    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    _claim(cfg)
    if run_tasks(cfg.executor, partial(synthetic_task, cfg), f"{cfg.output}/logs",
                 "synthetic passages"):
        return {"submitted": True}
    return finalize_synthetic(cfg)


def finalize_synthetic(cfg: SyntheticConfig) -> dict:
    from loki.data.tokenize import tokenize_files
    from loki.distill.teachers import make_teacher

    out = Path(cfg.output)
    markers = [out / "jsonl" / f"{r:05d}.json" for r in range(cfg.executor.tasks)]
    missing = [r for r, m in enumerate(markers) if not m.is_file()]
    if missing:
        raise LokiError(f"synthetic tasks {missing} have not finished; run `loki distill "
                        "synthetic` again (finished tasks are skipped)")
    total: dict[str, int] = {}
    for m in markers:
        for key, value in json.loads(m.read_text())["report"]["synthetic"].items():
            total[key] = total.get(key, 0) + value
    shards = out / "shards"
    if not (shards / "synthetic" / "manifest.json").is_file():
        tmp = out / "shards.part"
        shutil.rmtree(tmp, ignore_errors=True)  # a tokenization cut short: redo it whole
        files = sorted((out / "jsonl").glob("*.jsonl.gz"))
        tokenize_files(files, tmp, cfg.tokenizer, default_source="synthetic", log=lambda *a: None)
        tmp.rename(shards)
    report = {**total, "teacher": make_teacher(cfg.teacher).identity(),
              "shards": str(shards / "synthetic")}
    (out / "synthetic_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _claim(cfg: SyntheticConfig) -> None:
    """Finished tasks are skipped on a rerun: a folder of another config must not be continued."""
    recipe = json.loads(json.dumps({k: v for k, v in asdict(cfg).items()
                                    if k not in ("executor", "output")} | {
        "tasks": cfg.executor.tasks}))
    path = Path(cfg.output) / "synthetic.json"
    if path.is_file():
        if json.loads(path.read_text()) != recipe:
            raise LokiError(f"{cfg.output} holds synthetic text made with another config (see "
                            f"{path}); delete the folder or choose another output")
        return
    path.write_text(json.dumps(recipe, indent=1) + "\n")
