"""Filter-pipeline throughput on CPU: docs/s per stage, and SemDeDup time at N, 2N, 4N documents.

    python benchmarks/filtering.py [--docs 600] [--semdedup-n 2000] [--embed minilm|hashing]

Stage figures come from a full pipeline run on a generated corpus (the test prose generator);
SemDeDup scaling uses random unit vectors clustered at a fixed cluster size (k = N / size), so the
pairwise work is N * size and the time should grow about linearly with N.
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=600)
    ap.add_argument("--semdedup-n", type=int, default=2000)
    ap.add_argument("--embed", default="hashing")
    args = ap.parse_args()
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
