"""The sharded global stages (sampled k-means, assignment, per-cluster SemDeDup, prototype cut-off)
against the in-memory reference, and their bounded-memory pieces."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import filter_config, prose, run_filter, write_jsonl

from loki.filtering.embed import EmbeddingStore
from loki.filtering.semantic import (
    ALIVE,
    order_key,
    prototype_cutoff,
    prototype_keep,
    semdedup,
    semdedup_cluster,
    spherical_kmeans,
    split_oversized,
)


def near_duplicate_corpus(tmp_path: Path, rng, n: int = 160) -> list[str]:
    rows = [{"id": f"d{i:03d}", "text": prose(rng, 10)} for i in range(n)]
    for i in range(0, n, 4):  # a light edit of every 4th document: a semantic near duplicate
        words = rows[i]["text"].split()
        words[5] = "indeed"
        rows.append({"id": f"d{i:03d}-edit", "text": " ".join(words)})
    rng.shuffle(rows)
    write_jsonl(tmp_path / "raw" / "a.jsonl", rows[: len(rows) // 2])
    write_jsonl(tmp_path / "raw" / "b.jsonl", rows[len(rows) // 2:])
    return [str(tmp_path / "raw" / "*.jsonl")]


def embed_ids(work: Path) -> dict[str, str]:
    """_emb key -> document id, from the embed stage's shards."""
    out = {}
    for p in sorted((work / "stages" / "04_embed").glob("*.jsonl.gz")):
        with gzip.open(p, "rt") as f:
            for line in f:
                row = json.loads(line)
                out[row["metadata"]["_emb"]] = row["id"]
    return out


def reference_kept(work: Path, cfg) -> set[str]:
    """Today's in-memory implementation: every vector loaded, one k-means, global sort."""
    s, p = cfg.semdedup, cfg.prototypes
    keys, x = EmbeddingStore(str(work / "embeddings")).load_all()
    k = s.n_clusters or max(1, len(keys) // s.docs_per_cluster)
    labels, centroids = spherical_kmeans(x, k, s.seed, s.fit_sample, s.kmeans)
    alive = ~semdedup(x, labels, centroids, s.eps, s.keep, s.compare_to)
    mask = prototype_keep(x[alive], centroids, p.keep_fraction, p.keep)
    ids = embed_ids(work)
    return {ids[k] for k, m in zip(np.asarray(keys)[alive], mask) if m}


@pytest.mark.parametrize(("backend", "fit_sample", "keep"), [
    ("sklearn", 100_000, "hard"),  # the original stage exactly: sample = everything
    ("faiss", 100_000, "hard"),
    ("faiss", 90, "easy"),  # a sampled fit: the same rows are drawn as in memory
])
def test_sharded_global_stages_keep_the_in_memory_set(tmp_path, rng, backend, fit_sample, keep):
    inputs = near_duplicate_corpus(tmp_path, rng)
    cfg = filter_config(tmp_path, inputs, semdedup={"docs_per_cluster": 20, "kmeans": backend,
                                                    "fit_sample": fit_sample, "keep": keep},
                        prototypes={"keep_fraction": 0.8, "keep": keep})
    cfg.executor.tasks = 3
    report, out = run_filter(cfg)
    rows = {r["stage"]: r for r in report["stages"]}
    assert rows["semdedup"]["docs_out"] < rows["semdedup"]["docs_in"]  # duplicates were found
    assert {d["id"] for d in out} == reference_kept(Path(cfg.work_dir), cfg)
    for name in ("semdedup", "prototypes"):  # accounting: in = out + removed, per stage
        r = rows[name]
        assert r["docs_in"] == r["docs_out"] + sum(r["reasons"].values()), r


def test_blockwise_semdedup_equals_one_block():
    rng = np.random.default_rng(3)
    base = rng.normal(size=(40, 24))
    x = np.concatenate([base, base + 0.15 * rng.normal(size=base.shape), base[:10]])
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    centroid = x.mean(axis=0) / np.linalg.norm(x.mean(axis=0))
    for compare_to in ("kept", "all"):
        whole = semdedup_cluster(x, centroid, 0.1, "hard", compare_to, block=len(x))
        small = semdedup_cluster(x, centroid, 0.1, "hard", compare_to, block=7)
        assert whole[0].sum() >= 10
        # The decisions are the same; the similarities agree to float32 rounding, because the
        # block size changes the matrix shapes and so the BLAS kernel's summation order.
        np.testing.assert_array_equal(whole[0], small[0])
        np.testing.assert_array_equal(whole[2], small[2])
        np.testing.assert_allclose(whole[1], small[1], rtol=0, atol=1e-6)


def test_prototype_cutoff_is_the_exact_global_rank_with_ties(tmp_path):
    rng = np.random.default_rng(0)
    scores = rng.choice(np.float32([-1e-7, 0.0, 0.25, 0.2500001, 0.5, 1.3]), size=3000)
    scores[::7] = rng.random(len(scores[::7]), dtype=np.float32)
    pos = rng.permutation(10_000)[:3000].astype(np.int64)
    (tmp_path / "prune").mkdir()
    for t, part in enumerate(np.array_split(np.arange(3000), 3)):  # three task files
        rec = np.zeros(len(part), ALIVE)
        rec["pos"], rec["score"] = pos[part], scores[part]
        (tmp_path / "prune" / f"{t:05d}.alive.bin").write_bytes(rec.tobytes())
    for keep, fraction in (("hard", 0.9), ("easy", 0.37), ("hard", 1.0)):
        cut = prototype_cutoff(str(tmp_path), fraction, keep)
        key = order_key(scores, keep)
        kept = (key < cut["key"]) | ((key == cut["key"]) & (pos <= cut["pos"]))
        by_pos = np.argsort(pos, kind="stable")  # the reference sees documents in corpus order
        ref = np.zeros(3000, bool)
        s = scores[by_pos]
        order = np.argsort(-s if keep == "hard" else s, kind="stable")
        ref[by_pos[order[:round(fraction * 3000)]]] = True
        np.testing.assert_array_equal(kept, ref)


def test_oversized_clusters_are_split_into_bounded_parts():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    parts = split_oversized(x, x[:, 0], 60, seed=0, backend="faiss")
    assert max(map(len, parts)) <= 60 and len(parts) >= 9
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(500))
    assert len(split_oversized(x, x[:, 0], 0, 0, "faiss")) == 1  # 0 = never split
