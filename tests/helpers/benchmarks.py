"""Tiny stand-ins for the six Table-1 benchmark datasets, in the hub datasets' own schemas, so
that lm-eval's real task definitions (prompts, choices, metrics, filters) run on them offline.

``write_benchmark_source(root)`` lays them out as an export (``<root>/<dataset>/<split>.jsonl``,
one split as parquet) for ``loki eval prepare-data --from_dir``. Each split has ``ROWS`` items:
enough for the paper preset's largest shot count (10) plus the scored item.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

ROWS = 12
NOUNS = ["river", "lamp", "garden", "engine", "letter", "bridge", "window", "market", "violin",
         "harbor", "kettle", "ladder", "candle", "forest"]


def _arc(i: int) -> dict:
    n = NOUNS[i % len(NOUNS)]
    return {"id": f"arc-{i}", "question": f"Which tool is used to repair the {n} number {i}?",
            "choices": {"text": ["a hammer", "a song", "a cloud", "a shadow"],
                        "label": ["A", "B", "C", "D"]}, "answerKey": "ABCD"[i % 4]}


def _hellaswag(i: int) -> dict:
    n = NOUNS[i % len(NOUNS)]
    return {"ind": i, "activity_label": "Cleaning", "ctx_a": f"A man walks up to the {n}.",
            "ctx_b": "he", "ctx": f"A man walks up to the {n}. he",
            "endings": [f"washes the {n} slowly.", "flies to the moon.", "eats the sky.",
                        "sings to a rock."], "source_id": f"src-{i}", "split": "train",
            "split_type": "indomain", "label": str(i % 4)}


def _mmlu(i: int) -> dict:
    return {"question": f"What is {i} plus {i}?", "subject": "elementary_mathematics",
            "choices": [str(2 * i), str(2 * i + 1), str(i), str(i + 3)], "answer": 0}


def _truthfulqa(i: int) -> dict:
    n = NOUNS[i % len(NOUNS)]
    return {"question": f"What happens if you leave a {n} outside overnight?",
            "mc1_targets": {"choices": [f"Nothing in particular happens to the {n}.",
                                        f"The {n} turns into gold."], "labels": [1, 0]},
            "mc2_targets": {"choices": [f"Nothing in particular happens to the {n}.",
                                        f"The {n} may get wet.", f"The {n} turns into gold."],
                            "labels": [1, 1, 0]}}


def _winogrande(i: int) -> dict:
    n = NOUNS[i % len(NOUNS)]
    return {"sentence": f"The {n} did not fit in the box because the _ was too big.",
            "option1": n, "option2": "box", "answer": "1" if i % 2 == 0 else "2"}


def _gsm8k(i: int) -> dict:
    return {"question": f"Ann has {i} apples and buys {i + 2} more. How many apples does she "
                        "have?", "answer": f"She has {i} + {i + 2} = {2 * i + 2} apples.\n"
                                          f"#### {2 * i + 2}"}


# dataset folder -> (row maker, splits), as the packaged *_local templates read them
DATASETS: dict[str, tuple[Callable[[int], dict], tuple[str, ...]]] = {
    "arc_challenge": (_arc, ("train", "validation", "test")),
    "hellaswag": (_hellaswag, ("train", "validation")),
    "mmlu": (_mmlu, ("dev", "test")),
    "truthfulqa": (_truthfulqa, ("validation",)),
    "winogrande": (_winogrande, ("train", "validation")),
    "gsm8k": (_gsm8k, ("train", "test")),
}


def write_benchmark_source(root: Path) -> Path:
    """An export of all six datasets under ``root``; mmlu's test split as parquet."""
    for folder, (make, splits) in DATASETS.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for k, split in enumerate(splits):
            rows = [make(100 * k + i) for i in range(ROWS)]
            if (folder, split) == ("mmlu", "test"):
                import pandas as pd

                pd.DataFrame(rows).to_parquet(root / folder / f"{split}.parquet")
                continue
            (root / folder / f"{split}.jsonl").write_text(
                "".join(json.dumps(r) + "\n" for r in rows))
    return root
