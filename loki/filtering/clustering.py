"""Spherical k-means at corpus scale: a fit on a bounded sample, then a sharded assignment.

Memory never grows with the corpus:

- ``ClusterFit`` (one task) reads only the shard headers to count N, draws the same uniform sample
  as the in-memory reference (``rng.choice(N, fit_sample)`` with the k-means seed), gathers it one
  embedding shard at a time and fits k centroids (faiss by default; scikit-learn reproduces the
  original in-memory stage exactly). Memory: the sample plus one shard.
- ``ClusterAssign`` (sharded by embedding file) gives every vector its nearest centroid and writes
  the shard back in cluster order with per-cluster offsets, so a per-cluster task reads exactly its
  cluster's rows from every shard (``read_cluster``) and nothing else.

Files under the clusters folder: ``centroids.npy``, ``meta.json`` (N, k, the embedding shard
names), ``assign/<shard>.{vectors,rows,sims,offsets}.npy``.
"""

from __future__ import annotations

import json
import os

import numpy as np
from datatrove.data import DocumentsPipeline
from datatrove.io import DataFolderLike, get_datafolder
from datatrove.pipeline.base import PipelineStep

from loki._optional import require
from loki.filtering.embed import load_array, save_array

POS_BITS = 40  # a document's global position: shard index << 40 | row (keeps (shard, row) order)


def npy_layout(f) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) of an open ``.npy`` file, read from its header only."""
    fmt = np.lib.format
    major, _ = fmt.read_magic(f)
    read = fmt.read_array_header_1_0 if major == 1 else fmt.read_array_header_2_0
    shape, fortran, dtype = read(f)
    if fortran:
        raise ValueError("Fortran-ordered arrays are not read by rows")
    return shape, dtype, f.tell()


def read_rows(folder: DataFolderLike, name: str, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of ``folder/name`` (an ``.npy``) without reading the rest of the file."""
    with get_datafolder(folder).open(name, "rb") as f:
        shape, dtype, offset = npy_layout(f)
        row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        stop = min(stop, shape[0])
        if stop <= start:
            return np.zeros((0, *shape[1:]), dtype)
        f.seek(offset + start * row)
        return np.frombuffer(f.read((stop - start) * row), dtype).reshape(stop - start, *shape[1:])


def num_rows(folder: DataFolderLike, name: str) -> int:
    with get_datafolder(folder).open(name, "rb") as f:
        return int(npy_layout(f)[0][0])


def embedding_shards(folder: DataFolderLike) -> list[str]:
    """Embedding shard names (``<rank>``, sorted), as the embed stage wrote them."""
    names = get_datafolder(folder).list_files(glob_pattern="*.npy")
    return sorted(os.path.basename(n)[:-4] for n in names)


def normalize(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def fit_centroids(sample: np.ndarray, k: int, seed: int = 0, backend: str = "faiss",
                  iterations: int = 20) -> np.ndarray:
    """Spherical k-means centroids (k, D), unit rows, fitted on ``sample`` (n, D) unit rows.

    ``sklearn`` is the original stage (KMeans on unit vectors, centroids re-normalized);
    ``faiss`` is its scalable replacement (spherical Lloyd iterations, multithreaded BLAS).
    """
    k = max(1, min(k, len(sample)))
    if backend == "sklearn":
        cluster = require("sklearn.cluster", "data")
        km = cluster.KMeans(n_clusters=k, n_init=1, random_state=seed).fit(sample)
        return normalize(km.cluster_centers_)
    faiss = require("faiss", "data")
    x = np.ascontiguousarray(sample, dtype=np.float32)
    # the caller already bounded the sample: faiss must not subsample it again
    km = faiss.Kmeans(x.shape[1], k, niter=iterations, seed=seed, spherical=True, verbose=False,
                      max_points_per_centroid=max(1, len(x)), min_points_per_centroid=1)
    km.train(x)
    return normalize(km.centroids)


def nearest(x: np.ndarray, centroids: np.ndarray, chunk: int = 65536
            ) -> tuple[np.ndarray, np.ndarray]:
    """(label (n,), cosine to that centroid (n,)) for unit rows x (n, D); chunked matmuls."""
    labels = np.zeros(len(x), np.int64)
    sims = np.zeros(len(x), np.float32)
    for s in range(0, len(x), chunk):
        sim = x[s:s + chunk].astype(np.float32) @ centroids.T  # (chunk, k)
        labels[s:s + chunk] = np.argmax(sim, axis=1)
        sims[s:s + chunk] = sim.max(axis=1)
    return labels, sims


def sample_rows(folder: DataFolderLike, shards: list[str], sizes: list[int], fit_sample: int,
                seed: int) -> np.ndarray:
    """The k-means training sample, gathered one shard at a time.

    The same rows in the same order as ``x[rng.choice(N, fit_sample, replace=False)]`` over the
    concatenated shards (everything, in order, when N <= fit_sample).
    """
    n = sum(sizes)
    dim = read_rows(folder, f"{shards[0]}.npy", 0, 1).shape[1]
    if n <= fit_sample:
        return np.concatenate([read_rows(folder, f"{s}.npy", 0, m).astype(np.float32)
                               for s, m in zip(shards, sizes)]) if n else np.zeros((0, dim))
    picks = np.random.default_rng(seed).choice(n, fit_sample, replace=False)
    out = np.zeros((fit_sample, dim), np.float32)
    starts = np.cumsum([0, *sizes])
    for i, s in enumerate(shards):
        where = np.flatnonzero((picks >= starts[i]) & (picks < starts[i + 1]))
        if len(where):
            x = load_array(folder, f"{s}.npy")
            out[where] = x[picks[where] - starts[i]]
    return out


class ClusterFit(PipelineStep):
    """One task: k centroids from a bounded uniform sample -> ``centroids.npy``, ``meta.json``."""

    type = "🧭 - CLUSTER"
    name = "spherical k-means fit"

    def __init__(self, embeddings: DataFolderLike, output_folder: DataFolderLike,
                 docs_per_cluster: int, n_clusters: int = 0, seed: int = 0,
                 fit_sample: int = 100_000, backend: str = "faiss"):
        super().__init__()
        self.embeddings, self.output_folder = embeddings, output_folder
        self.docs_per_cluster, self.n_clusters = docs_per_cluster, n_clusters
        self.seed, self.fit_sample, self.backend = seed, fit_sample, backend

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1):
        shards = embedding_shards(self.embeddings)
        sizes = [num_rows(self.embeddings, f"{s}.npy") for s in shards]
        n = sum(sizes)
        k = max(1, min(self.n_clusters or n // max(1, self.docs_per_cluster), max(n, 1)))
        dim = read_rows(self.embeddings, f"{shards[0]}.npy", 0, 1).shape[1] if shards else 1
        centroids = np.zeros((0, dim), np.float32)
        if n:
            with self.track_time():
                sample = sample_rows(self.embeddings, shards, sizes, self.fit_sample, self.seed)
                centroids = fit_centroids(sample, k, self.seed, self.backend)
                del sample
        self.stat_update("clusters", value=len(centroids))
        self.stat_update("fit_sample", value=min(n, self.fit_sample))
        save_array(self.output_folder, "centroids.npy", centroids)
        with get_datafolder(self.output_folder).open("meta.json", "w") as f:
            json.dump({"n": n, "k": len(centroids), "dim": dim, "shards": shards,
                       "sizes": sizes}, f)
        yield from ()


def load_meta(clusters: DataFolderLike) -> dict:
    with get_datafolder(clusters).open("meta.json") as f:
        return json.load(f)


class ClusterAssign(PipelineStep):
    """Sharded: every vector of this task's embedding shards to its nearest centroid.

    Writes each shard in cluster order (``assign/<shard>.vectors.npy``, original ``rows``, cosine
    ``sims``) with ``offsets`` (k + 1,) so cluster c is rows ``offsets[c]:offsets[c + 1]``.
    """

    type = "🧭 - CLUSTER"
    name = "assign to nearest centroid"

    def __init__(self, embeddings: DataFolderLike, clusters: DataFolderLike):
        super().__init__()
        self.embeddings, self.clusters = embeddings, clusters

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1):
        meta = load_meta(self.clusters)
        centroids = load_array(self.clusters, "centroids.npy")
        for shard in meta["shards"][rank::world_size]:
            x = load_array(self.embeddings, f"{shard}.npy")
            with self.track_time():
                labels, sims = nearest(x, centroids)
                order = np.argsort(labels, kind="stable")  # rows stay ascending within a cluster
                offsets = np.searchsorted(labels[order], np.arange(len(centroids) + 1))
            for name, arr in (("vectors", x[order]), ("rows", order.astype(np.int64)),
                              ("sims", sims[order]), ("offsets", offsets.astype(np.int64))):
                save_array(self.clusters, f"assign/{shard}.{name}.npy", arr)
            self.stat_update("assigned", value=len(x))
            del x, labels, sims, order
        yield from ()


def read_cluster(clusters: DataFolderLike, meta: dict, c: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cluster c's members from every shard, in (shard, row) order.

    Returns (vectors (m, D) float32, positions (m,) int64, cosine to the centroid (m,)).
    """
    xs, pos, sims = [], [], []
    for i, shard in enumerate(meta["shards"]):
        lo, hi = read_rows(clusters, f"assign/{shard}.offsets.npy", c, c + 2)
        if hi > lo:
            xs.append(read_rows(clusters, f"assign/{shard}.vectors.npy", lo, hi).astype(np.float32))
            rows = read_rows(clusters, f"assign/{shard}.rows.npy", lo, hi)
            pos.append((np.int64(i) << POS_BITS) | rows)
            sims.append(read_rows(clusters, f"assign/{shard}.sims.npy", lo, hi))
    if not xs:
        return (np.zeros((0, meta["dim"]), np.float32), np.zeros(0, np.int64),
                np.zeros(0, np.float32))
    return np.concatenate(xs), np.concatenate(pos), np.concatenate(sims)


def shard_sims(clusters: DataFolderLike, shard: str) -> np.ndarray:
    """Cosine of each row of one embedding shard to its centroid, in row order (n,)."""
    rows = load_array(clusters, f"assign/{shard}.rows.npy")
    out = np.zeros(len(rows), np.float32)
    out[rows] = load_array(clusters, f"assign/{shard}.sims.npy")
    return out
