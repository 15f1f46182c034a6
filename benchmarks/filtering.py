"""Filter-pipeline throughput on CPU: docs/s per stage, and SemDeDup time at N, 2N, 4N documents.

    python benchmarks/filtering.py [--docs 600] [--semdedup-n 2000] [--embed minilm|hashing]
                                   [--decontam-docs 2000] [--index-scale 0.1]
    python benchmarks/filtering.py --scale 100000,400000,1600000   # the global stages at scale

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
import hashlib
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
        from loki.filtering.stage_config import BenchmarkTask

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
    from loki.filtering.stage_config import DecontamConfig

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
# ------------------------------------------------------------------ the global stages at scale
SHARD_ROWS = 100_000  # rows per embedding shard; tasks = shards, so work per task is constant


def generate_embeddings(n: int, folder: Path, cluster_size: int = 5000, dim: int = 384,
                        seed: int = 0) -> None:
    """Clustered unit vectors in float16 shards (``<rank>.npy``), as the embed stage writes them:
    N / cluster_size topics, members spread around their topic, 10% near copies of a member."""
    from loki.filtering.embed import save_array

    rng = np.random.default_rng(seed)
    topics = rng.normal(size=(max(1, n // cluster_size), dim)).astype(np.float32)
    for r, start in enumerate(range(0, n, SHARD_ROWS)):
        m = min(SHARD_ROWS, n - start)
        x = topics[rng.integers(0, len(topics), m)] + 0.09 * rng.normal(size=(m, dim)).astype(
            np.float32) * np.sqrt(dim) / 4
        copies = rng.random(m) < 0.1
        src = rng.integers(0, m, int(copies.sum()))
        x[copies] = x[src] + 0.02 * rng.normal(size=(len(src), dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        save_array(str(folder), f"{r:05d}.npy", x.astype(np.float16))


def scale_row(n: int, folder: Path, docs_per_cluster: int = 5000) -> dict:
    """Fit, assign, per-cluster SemDeDup + prototype scores and the cut-off, task by task in this
    process (a cluster runs the same steps one per node). Returns seconds, peak RSS and kept set."""
    import resource

    from loki.filtering.clustering import ClusterAssign, ClusterFit
    from loki.filtering.semantic import ClusterPrune, PrototypeSelect, SemanticFilter

    emb, clusters = str(folder / "emb"), str(folder / "clusters")
    tasks = max(1, n // SHARD_ROWS)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    base, cpu0 = usage.ru_maxrss, usage.ru_utime + usage.ru_stime
    t0 = time.perf_counter()
    steps = [(ClusterFit(emb, clusters, docs_per_cluster, seed=0, fit_sample=100_000), 1),
             (ClusterAssign(emb, clusters), tasks),
             (ClusterPrune(clusters, True, True, eps=0.1, seed=0), tasks),
             (PrototypeSelect(clusters, keep_fraction=0.9), 1)]
    for step, world in steps:
        for rank in range(world):
            for _ in step.run(None, rank, world):
                pass
    seconds = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak, cpu = usage.ru_maxrss, usage.ru_utime + usage.ru_stime - cpu0
    sem, proto = SemanticFilter(clusters, "semdedup"), SemanticFilter(clusters, "prototype")
    kept = []
    for r in range(tasks):
        keep = proto.decisions(f"{r:05d}").copy()
        keep[list(sem.decisions(f"{r:05d}"))] = False
        kept.append(np.flatnonzero(keep) + r * SHARD_ROWS)
    kept = np.concatenate(kept)
    return {"n": n, "seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": peak / 1024, "import_rss_mb": base / 1024,
            "kept": len(kept), "kept_hash": hashlib.sha256(kept.tobytes()).hexdigest()}


def reference_kept(folder: Path, docs_per_cluster: int = 5000) -> dict:
    """The in-memory implementation over the same shards (faiss fit on the same sample)."""
    from loki.filtering.embed import EmbeddingStore
    from loki.filtering.semantic import prototype_keep, semdedup, spherical_kmeans

    t0 = time.perf_counter()
    keys, x = EmbeddingStore(str(folder / "emb")).load_all()
    labels, centroids = spherical_kmeans(x, len(x) // docs_per_cluster, 0, 100_000, "faiss")
    alive = np.flatnonzero(~semdedup(x, labels, centroids, 0.1))
    keep = prototype_keep(x[alive], centroids, 0.9)
    kept = alive[keep]
    return {"seconds": time.perf_counter() - t0, "kept": len(kept),
            "kept_hash": hashlib.sha256(kept.tobytes()).hexdigest()}


def scale_rows(sizes: list[int]) -> None:
    """Each row in a fresh process (peak RSS is per process); the 100k row also runs the
    in-memory reference and compares kept sets."""
    import json
    import subprocess

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            folder = Path(tmp) / str(n)
            run = [sys.executable, __file__, "--scale-row", str(n), "--folder", str(folder)]
            subprocess.run([*run, "--generate"], check=True)
            rows.append(json.loads(subprocess.run(run, check=True, capture_output=True,
                                                  text=True).stdout.splitlines()[-1]))
            if n == sizes[0]:
                ref = json.loads(subprocess.run([*run, "--reference"], check=True,
                                                capture_output=True, text=True
                                                ).stdout.splitlines()[-1])
                rows[-1]["reference_equal"] = ref["kept_hash"] == rows[-1]["kept_hash"]
                rows[-1]["reference_seconds"] = ref["seconds"]
            for f in folder.rglob("*.npy"):
                f.unlink()  # 1.6M float16 vectors take 1.2 GB twice (shards + cluster order)
            print(json.dumps(rows[-1]), flush=True)
    first = rows[0]
    print("\n| N | seconds | time ratio | CPU s | CPU ratio | peak RSS MB | RSS growth | kept |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['n']} | {r['seconds']:.1f} | {r['seconds'] / first['seconds']:.2f} | "
              f"{r['cpu_seconds']:.1f} | {r['cpu_seconds'] / first['cpu_seconds']:.2f} | "
              f"{r['peak_rss_mb']:.0f} | {100 * (r['peak_rss_mb'] / first['peak_rss_mb'] - 1):+.1f}%"
              f" | {r['kept']} |")
    print(f"kept set at {first['n']} equals the in-memory reference: {first['reference_equal']} "
          f"(reference {first['reference_seconds']:.1f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=600)
    ap.add_argument("--semdedup-n", type=int, default=2000)
    ap.add_argument("--embed", default="hashing")
    ap.add_argument("--decontam-docs", type=int, default=2000)
    ap.add_argument("--index-scale", type=float, default=0.1)
    ap.add_argument("--only-decontam", action="store_true", help="skip the pipeline and SemDeDup")
    ap.add_argument("--scale", default="", help="comma-separated N: the global stages at scale")
    ap.add_argument("--scale-row", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--folder", default="", help=argparse.SUPPRESS)
    ap.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--reference", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.scale_row:  # one row, in its own process (see scale_rows)
        folder = Path(args.folder)
        if args.generate:
            generate_embeddings(args.scale_row, folder / "emb")
        else:
            print(json.dumps((reference_kept if args.reference else scale_row)(*(
                (folder,) if args.reference else (args.scale_row, folder)))))
        return
    if args.scale:
        scale_rows([int(v) for v in args.scale.split(",")])
        return
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
