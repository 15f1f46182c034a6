"""SemDeDup (Abbas et al. 2023) and SSL-prototype pruning (Sorscher et al. 2022).

Both use one spherical k-means over the L2-normalized document embeddings (scikit-learn KMeans on
unit vectors, centroids re-normalized). Stages, datatrove-style:

1. ``ClusterFit`` (one task): fit k-means, assign every vector, save ``clusters.npz``.
2. ``SemDedupFind`` (sharded by cluster: task r handles clusters r, r+W, ...): inside each cluster,
   order members by cosine to the centroid (``keep="hard"``: farthest first, so the atypical
   member of a duplicate group is the one kept), then walk the order and drop a member whose
   cosine similarity to an earlier member exceeds ``1 - eps``. ``compare_to="kept"`` (our
   default) compares with earlier *kept* members only, so a chain A~B~C with A!~C keeps A and C;
   ``compare_to="all"`` compares with every earlier member as the reference code does (keeps only
   A). Memory is O(max cluster size^2); total work O(N * N/k).
3. ``PrototypeSelect`` (one task): among documents SemDeDup kept, score = 1 - cosine to the nearest
   centroid; keep the hardest (largest score) or easiest ``keep_fraction``.
4. ``SemanticFilter`` (sharded): drops documents named by steps 2 and 3.
"""

from __future__ import annotations

import json

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.io import DataFolderLike, get_datafolder
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.writers.disk_base import DiskWriter

from loki._optional import require
from loki.filtering.embed import EmbeddingStore, load_array, save_array


def spherical_kmeans(x: np.ndarray, k: int, seed: int = 0, fit_sample: int = 100_000
                     ) -> tuple[np.ndarray, np.ndarray]:
    """x (N, D) unit rows -> (labels (N,), centroids (k, D) unit rows)."""
    cluster = require("sklearn.cluster", "data")
    k = max(1, min(k, len(x)))
    rng = np.random.default_rng(seed)
    fit_x = x if len(x) <= fit_sample else x[rng.choice(len(x), fit_sample, replace=False)]
    km = cluster.KMeans(n_clusters=k, n_init=1, random_state=seed).fit(fit_x)
    centroids = km.cluster_centers_.astype(np.float32)
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    labels = np.argmax(x @ centroids.T, axis=1)  # nearest by cosine, (N,)
    return labels, centroids


def semdedup_cluster(x: np.ndarray, centroid: np.ndarray, eps: float, keep: str = "hard",
                     compare_to: str = "kept") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One cluster's SemDeDup. x (m, D) unit rows, centroid (D,).

    Returns (drop mask (m,), best similarity (m,), index of the matched member (m,), -1 if none).
    """
    m = len(x)
    drop = np.zeros(m, dtype=bool)
    best = np.zeros(m, dtype=np.float32)
    match = np.full(m, -1, dtype=np.int64)
    if m < 2:
        return drop, best, match
    to_centroid = x @ centroid  # (m,)
    order = np.argsort(to_centroid if keep == "hard" else -to_centroid, kind="stable")
    sims = x[order] @ x[order].T  # (m, m) in visiting order
    threshold = 1.0 - eps
    if compare_to == "all":
        earlier = np.tril(sims, k=-1) + np.triu(np.full((m, m), -2.0, np.float32))
        best_o = earlier.max(axis=1)
        arg_o = earlier.argmax(axis=1)
        drop_o = best_o > threshold
        drop[order] = drop_o
        best[order] = best_o
        match[order] = np.where(drop_o, order[arg_o], -1)
        return drop, best, match
    kept: list[int] = [0]
    for i in range(1, m):
        row = sims[i, kept]
        j = int(np.argmax(row))
        best[order[i]] = row[j]
        if row[j] > threshold:
            drop[order[i]] = True
            match[order[i]] = order[kept[j]]
        else:
            kept.append(i)
    return drop, best, match


def semdedup(x: np.ndarray, labels: np.ndarray, centroids: np.ndarray, eps: float,
             keep: str = "hard", compare_to: str = "kept", clusters=None) -> np.ndarray:
    """Drop mask (N,) over all documents (or only those in ``clusters``)."""
    drop = np.zeros(len(x), dtype=bool)
    for c in range(len(centroids)) if clusters is None else clusters:
        idx = np.flatnonzero(labels == c)
        d, _, _ = semdedup_cluster(x[idx], centroids[c], eps, keep, compare_to)
        drop[idx] = d
    return drop


def prototype_keep(x: np.ndarray, centroids: np.ndarray, keep_fraction: float,
                   keep: str = "hard") -> np.ndarray:
    """Keep mask (N,): the hardest (farthest from nearest centroid) or easiest fraction."""
    score = 1.0 - (x @ centroids.T).max(axis=1)  # (N,) cosine distance to the nearest prototype
    n_keep = int(round(keep_fraction * len(x)))
    order = np.argsort(-score if keep == "hard" else score, kind="stable")
    mask = np.zeros(len(x), dtype=bool)
    mask[order[:n_keep]] = True
    return mask


class ClusterFit(PipelineStep):
    """Global step: k-means over every saved embedding -> ``clusters.npz``."""

    type = "🧭 - CLUSTER"
    name = "spherical k-means"

    def __init__(self, embeddings: DataFolderLike, output_folder: DataFolderLike,
                 docs_per_cluster: int, n_clusters: int = 0, seed: int = 0,
                 fit_sample: int = 100_000):
        super().__init__()
        self.embeddings, self.output_folder = embeddings, output_folder
        self.docs_per_cluster, self.n_clusters = docs_per_cluster, n_clusters
        self.seed, self.fit_sample = seed, fit_sample

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1):
        keys, x = EmbeddingStore(self.embeddings).load_all()
        k = self.n_clusters or max(1, len(keys) // max(1, self.docs_per_cluster))
        if len(keys):
            with self.track_time():
                labels, centroids = spherical_kmeans(x, k, self.seed, self.fit_sample)
        else:
            labels, centroids = np.zeros(0, np.int64), np.zeros((0, x.shape[1]), np.float32)
        self.stat_update("clusters", value=len(centroids))
        save_array(self.output_folder, "labels.npy", labels)
        save_array(self.output_folder, "centroids.npy", centroids)
        with get_datafolder(self.output_folder).open("keys.json", "w") as f:
            json.dump(keys, f)
        yield from ()


def _load_clusters(folder: DataFolderLike):
    with get_datafolder(folder).open("keys.json") as f:
        keys = json.load(f)
    return keys, load_array(folder, "labels.npy"), load_array(folder, "centroids.npy")


class SemDedupFind(PipelineStep):
    """Sharded by cluster: writes ``semdedup/<rank>.json`` {dropped key: [similarity, kept key]}."""

    type = "🧭 - SEMDEDUP"
    name = "semdedup find"

    def __init__(self, embeddings: DataFolderLike, clusters: DataFolderLike, eps: float,
                 keep: str = "hard", compare_to: str = "kept"):
        super().__init__()
        self.embeddings, self.clusters = embeddings, clusters
        self.eps, self.keep, self.compare_to = eps, keep, compare_to

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1):
        keys, labels, centroids = _load_clusters(self.clusters)
        store = EmbeddingStore(self.embeddings)
        drops: dict[str, list] = {}
        for c in range(rank, len(centroids), world_size):
            idx = np.flatnonzero(labels == c)
            x = np.stack([store.get(keys[i]) for i in idx]) if len(idx) else None
            if x is None:
                continue
            with self.track_time("cluster"):
                drop, best, match = semdedup_cluster(x, centroids[c], self.eps, self.keep,
                                                     self.compare_to)
            self.stat_update("cluster_members", value=len(idx), unit="cluster")
            for i in np.flatnonzero(drop):
                drops[keys[idx[i]]] = [float(best[i]), keys[idx[match[i]]]]
        self.stat_update("semdedup_drops", value=len(drops))
        with get_datafolder(self.clusters).open(f"semdedup/{rank:05d}.json", "w") as f:
            json.dump(drops, f)
        yield from ()


def _load_semdedup_drops(clusters: DataFolderLike) -> dict[str, list]:
    folder = get_datafolder(clusters)
    drops: dict[str, list] = {}
    if folder.isdir("semdedup"):
        for name in folder.list_files("semdedup", glob_pattern="*.json"):
            with folder.open(name) as f:
                drops.update(json.load(f))
    return drops


class PrototypeSelect(PipelineStep):
    """Global step: prototype-pruning decision over documents SemDeDup kept -> ``prototypes.json``."""

    type = "🧭 - PROTOTYPES"
    name = "prototype select"

    def __init__(self, embeddings: DataFolderLike, clusters: DataFolderLike, keep_fraction: float,
                 keep: str = "hard"):
        super().__init__()
        self.embeddings, self.clusters = embeddings, clusters
        self.keep_fraction, self.keep = keep_fraction, keep

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1):
        keys, _, centroids = _load_clusters(self.clusters)
        semdrops = _load_semdedup_drops(self.clusters)
        store = EmbeddingStore(self.embeddings)
        alive = [k for k in keys if k not in semdrops]
        dropped: list[str] = []
        if alive:
            x = np.stack([store.get(k) for k in alive])
            mask = prototype_keep(x, centroids, self.keep_fraction, self.keep)
            dropped = [k for k, m in zip(alive, mask) if not m]
        self.stat_update("prototype_drops", value=len(dropped))
        with get_datafolder(self.clusters).open("prototypes.json", "w") as f:
            json.dump(dropped, f)
        yield from ()


class SemanticFilter(BaseFilter):
    """Drops documents that SemDeDup (``which="semdedup"``) or prototype pruning named."""

    name = "🧭 semantic filter"

    def __init__(self, clusters: DataFolderLike, which: str,
                 exclusion_writer: DiskWriter | None = None):
        super().__init__(exclusion_writer)
        self.clusters, self.which = clusters, which
        self._drops: dict | None = None

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if self._drops is None:
            if self.which == "semdedup":
                self._drops = _load_semdedup_drops(self.clusters)
            else:
                with get_datafolder(self.clusters).open("prototypes.json") as f:
                    self._drops = {k: None for k in json.load(f)}
        hit = self._drops.get(doc.metadata.get("_emb"), False)
        if hit is False:
            return True
        if hit:
            doc.metadata["semdedup_similarity"], doc.metadata["semdedup_kept"] = hit
        return False, self.which
