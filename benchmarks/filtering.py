"""Filter-pipeline throughput on CPU: docs/s per stage, and SemDeDup time at N, 2N, 4N documents.

    python benchmarks/filtering.py [--docs 600] [--semdedup-n 2000] [--embed minilm|hashing]
                                   [--decontam-docs 2000] [--index-scale 0.1]

Stage figures come from a full pipeline run on a generated corpus (the test prose generator);
SemDeDup scaling uses random unit vectors clustered at a fixed cluster size (k = N / size), so the
pairwise work is N * size and the time should grow about linearly with N.

Decontamination: documents/s of ``BenchmarkIndex.find`` with the normaliser
(``loki.text_normalize``) against the previous word rule (lowercased ``[^\\W_]+`` runs, no Unicode
folding) on the same index, for ASCII prose and for prose with typographic punctuation (curly
quotes, dashes, non-breaking spaces: the non-ASCII path); and the time to build the index of the
six Table-1 tasks from lm-eval's task definitions (offline ``*_local`` tasks on generated items
in the original schemas, ``--index-scale`` times the real split sizes).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def stage_throughput(n_docs: int, embed: str) -> list[tuple[str, int, float]]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "filtering"))
    from conftest import filter_config, prose, run_filter, write_jsonl

    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_jsonl(tmp / "raw" / "a.jsonl",
                    [{"id": str(i), "text": prose(rng, 20)} for i in range(n_docs)])
        tasks = write_jsonl(tmp / "t.jsonl", [{"question": prose(rng, 2), "answer": prose(rng, 1)}])
        from loki.filtering.config import BenchmarkTask

        cfg = filter_config(tmp, [str(tmp / "raw")], clean=True,
                            dedup={"exact": True, "minhash": True}, semdedup={}, prototypes={},
                            quality={"threshold": 0.0}, factual={},
                            decontam={"tasks": [BenchmarkTask("t", str(tasks), ["question", "answer"])]},
                            embed={"model": embed, "max_chars": 600})
        report, _ = run_filter(cfg)
    return [(r["stage"], r.get("docs_in", 0), r["seconds"]) for r in report["stages"]]


def semdedup_scaling(n: int, cluster_size: int = 100, dim: int = 384) -> list[tuple[int, float]]:
    from loki.filtering.semantic import semdedup, spherical_kmeans

    out = []
    for mult in (1, 2, 4):
        rng = np.random.default_rng(mult)
        x = rng.normal(size=(n * mult, dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        labels, centroids = spherical_kmeans(x, (n * mult) // cluster_size, seed=0)
        times = []
        for _ in range(3):  # best of 3: the CPU may be shared
            t0 = time.perf_counter()
            semdedup(x, labels, centroids, eps=0.1)
            times.append(time.perf_counter() - t0)
        out.append((n * mult, min(times)))
    return out


# eval + few-shot split sizes of the Table-1 datasets (test/validation, train/dev)
SPLIT_SIZES = {"arc_challenge": {"test": 1172, "validation": 299, "train": 1119},
               "hellaswag": {"validation": 10042, "train": 39905},
               "mmlu": {"test": 14042, "dev": 285}, "truthfulqa": {"validation": 817},
               "winogrande": {"validation": 1267, "train": 40398},
               "gsm8k": {"test": 1319, "train": 7473}}


def _old_words(text: str) -> list[tuple[str, int, int]]:
    """The word rule before the normaliser: lowercased letter/digit runs, nothing folded."""
    import re

    return [(m.group(0).lower(), m.start(), m.end()) for m in re.finditer(r"[^\W_]+", text)]


def decontam_throughput(n_docs: int) -> list[tuple[str, float, float]]:
    """(corpus, new docs/s, old docs/s): best of 3 passes of ``find`` over the corpus."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "filtering"))
    from benchmark_rows import DATA
    from conftest import prose

    from loki.filtering.benchmark_index import BenchmarkIndex
    from loki.filtering.benchmark_items import field_texts

    index = BenchmarkIndex()
    for dataset, splits in DATA.items():
        index.add_items(dataset, (field_texts(r, list(r)) for rows in splits.values() for r in rows))
    rng = random.Random(0)
    ascii_docs = [prose(rng, 20) for _ in range(n_docs)]
    typographic = [d.replace(". ", ".\u00a0\u201c", 3).replace(" of ", " \u2014 of ", 2)
                   for d in ascii_docs]
    out = []
    for name, docs in (("ascii prose", ascii_docs), ("prose with curly quotes/dashes", typographic)):
        rates = []
        for words in (index.words, _old_words):
            probe = BenchmarkIndex(index.n)
            probe._table, probe.tasks, probe.words = index._table, index.tasks, words
            best = float("inf")
            for _ in range(3):
                t0 = time.perf_counter()
                for d in docs:
                    probe.find(d)
                best = min(best, time.perf_counter() - t0)
            rates.append(len(docs) / best)
        out.append((name, rates[0], rates[1]))
    return out


def index_build_seconds(scale: float) -> tuple[int, int, float]:
    """(items, n-grams, seconds) for the six Table-1 tasks at ``scale`` x the real split sizes."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "filtering"))
    from benchmark_rows import DATA, TASKS, write_data_dir
    from conftest import prose

    from loki.filtering.benchmark_index import BenchmarkIndex
    from loki.filtering.config import DecontamConfig

    rng = random.Random(0)

    def vary(row: dict) -> dict:  # a distinct item of the same schema
        row = json.loads(json.dumps(row))
        key = "sentence" if "sentence" in row else "question" if "question" in row else "ctx"
        text = row[key]
        row[key] = (text.replace("_", f"{prose(rng, 1)[:-1]} _", 1) if "_" in text
                    else f"{prose(rng, 1)} {text}")
        if "ctx_a" in row:
            row["ctx_a"] = row[key]
        return row

    data = {ds: {split: [vary(rows[i % len(rows)]) for i in range(max(1, round(n * scale)))]
                 for split, n in SPLIT_SIZES[ds].items() for rows in [
                     DATA[ds].get(split) or next(iter(DATA[ds].values()))]}
            for ds in SPLIT_SIZES}
    with tempfile.TemporaryDirectory() as tmp:
        write_data_dir(Path(tmp) / "data", data)
        cfg = DecontamConfig(lm_eval_tasks=TASKS, offline=True, data_dir=f"{tmp}/data")
        t0 = time.perf_counter()
        index = BenchmarkIndex.from_config(cfg)
        seconds = time.perf_counter() - t0
    return sum(s["items"] for s in index.stats.values()), len(index), seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=600)
    ap.add_argument("--semdedup-n", type=int, default=2000)
    ap.add_argument("--embed", default="hashing")
    ap.add_argument("--decontam-docs", type=int, default=2000)
    ap.add_argument("--index-scale", type=float, default=0.1)
    ap.add_argument("--only-decontam", action="store_true", help="skip the pipeline and SemDeDup")
    args = ap.parse_args()
    print(f"| decontamination find, {args.decontam_docs} docs | normaliser docs/s | "
          "old word rule docs/s | ratio |")
    for name, new, old in decontam_throughput(args.decontam_docs):
        print(f"| {name} | {new:.0f} | {old:.0f} | {new / old:.2f} |")
    items, ngrams, sec = index_build_seconds(args.index_scale)
    print(f"\nindex build, six Table-1 tasks via lm-eval (scale {args.index_scale}): "
          f"{items} items, {ngrams} n-grams, {sec:.1f} s\n")
    if args.only_decontam:
        return
    print(f"| stage | docs in | seconds | docs/s |  (embed={args.embed}, {args.docs} docs)")
    for name, docs, sec in stage_throughput(args.docs, args.embed):
        rate = f"{docs / sec:.0f}" if docs and sec else "-"
        print(f"| {name} | {docs} | {sec:.2f} | {rate} |")
    print("\n| N | SemDeDup seconds (cluster size 100) | ratio to N |")
    rows = semdedup_scaling(args.semdedup_n)
    for n, sec in rows:
        print(f"| {n} | {sec:.3f} | {sec / rows[0][1]:.2f} |")


if __name__ == "__main__":
    main()
