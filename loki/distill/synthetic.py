"""Machine-generated text for the early part of training.

The paper mixes "a small portion of machine-generated text in the early stages of training to aid
in learning basic language concepts". Here a teacher writes short explanatory passages about
topics taken from the training corpus (document titles); each passage is checked against the
benchmark 13-gram index like every other teacher output, and written as filter-style
``*.jsonl.gz`` with ``metadata.source = "synthetic"`` so ``loki tokenize`` makes it a source of its
own and the data module's mixture schedule decides when it is seen.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from loki.distill.teachers import Teacher

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
    seed: int = 0, min_chars: int = 200,
) -> dict[str, Any]:
    """Generate one passage per topic; drop benchmark copies and passages under ``min_chars``.

    Returns counts (written, dropped per reason) and the teacher identity; the same dict goes to
    ``<output>/synthetic_report.json``."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    prompts = [TEMPLATES[i % len(TEMPLATES)].format(topic=t) for i, t in enumerate(topics)]
    generations = teacher.generate(prompts, [[] for _ in prompts], seed)
    counts = {"topics": len(topics), "written": 0, "too_short": 0, "benchmark_copy": 0}
    with gzip.open(output / "00000.jsonl.gz", "wt") as f:
        for i, (topic, prompt, gen) in enumerate(zip(topics, prompts, generations)):
            text = (gen.text or "").strip()
            if len(text) < min_chars:
                counts["too_short"] += 1
                continue
            if index is not None and index.contaminated(text):
                counts["benchmark_copy"] += 1
                continue
            doc = {"id": f"synthetic-{i}", "text": f"{topic}\n\n{text}",
                   "metadata": {"source": "synthetic", "teacher": teacher.name,
                                "prompt": prompt, "seed": seed}}
            f.write(json.dumps(doc, ensure_ascii=False) + "\n")
            counts["written"] += 1
    report = {**counts, "teacher": teacher.identity()}
    (output / "synthetic_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
