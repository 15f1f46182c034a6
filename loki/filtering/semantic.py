"""SemDeDup (Abbas et al. 2023) and SSL-prototype pruning (Sorscher et al. 2022), per cluster.

Both use one spherical k-means over the L2-normalized document embeddings
(``loki/filtering/clustering.py``: a fit on a bounded sample, then a sharded assignment). Then:

1. ``ClusterPrune`` (sharded by cluster: task t handles clusters t, t+W, ...). Inside each cluster,
   members are ordered by cosine to the centroid (``keep="hard"``: farthest first, so the atypical
   member of a duplicate group is the one kept); walking that order, a member whose cosine to an
   earlier member exceeds ``1 - eps`` is dropped. ``compare_to="kept"`` (our default) compares with
   earlier *kept* members only, so a chain A~B~C with A!~C keeps A and C; ``compare_to="all"``
   compares with every earlier member as the reference code does (keeps only A). The survivors'
   prototype scores (1 - cosine to their centroid) are written for step 2. Memory per task: the
   largest cluster (its vectors plus a block x m similarity slab) plus a constant, never N.
   **Oversized clusters**: a cluster above ``max_cluster_size`` is split by a k-means on its own
   members into ceil(2 m / max) parts, and a part still above the bound is cut into consecutive
   runs of its visiting order; each part is deduplicated alone, with the parent centroid's order
   (duplicates that land in different parts both survive; the bound keeps time and memory flat).
2. ``PrototypeSelect`` (one task): the global rule "keep the hardest (or easiest) ``keep_fraction``
   of the documents SemDeDup kept, ties by corpus order" as a cut-off (score, position), found by
   an exact radix select that streams the per-task score files (65,536 counters, no N-sized sort).
3. ``SemanticFilter`` (sharded): drops what steps 1 and 2 decided, reading only its shard's part.

``semdedup`` and ``prototype_keep`` below are the in-memory reference the stages reproduce.
"""

from __future__ import annotations

import contextlib
import json
import math

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.io import DataFolderLike, get_datafolder
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.writers.disk_base import DiskWriter

from loki.filtering.clustering import (
    POS_BITS,
    fit_centroids,
    load_meta,
    read_cluster,
    shard_sims,
)
from loki.filtering.embed import load_array


def spherical_kmeans(x: np.ndarray, k: int, seed: int = 0, fit_sample: int = 100_000,
                     backend: str = "sklearn") -> tuple[np.ndarray, np.ndarray]:
    """x (N, D) unit rows -> (labels (N,), centroids (k, D) unit rows), all in memory.

    The reference for the sharded stages (``ClusterFit`` + ``ClusterAssign``), which draw the same
    sample and fit with the same ``fit_centroids``.
    """
    k = max(1, min(k, len(x)))
    rng = np.random.default_rng(seed)
    fit_x = x if len(x) <= fit_sample else x[rng.choice(len(x), fit_sample, replace=False)]
    centroids = fit_centroids(fit_x, k, seed, backend)
    labels = np.argmax(x @ centroids.T, axis=1)  # nearest by cosine, (N,)
    return labels, centroids


def semdedup_cluster(x: np.ndarray, centroid: np.ndarray, eps: float, keep: str = "hard",
                     compare_to: str = "kept", block: int = 1024
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One cluster's SemDeDup. x (m, D) unit rows, centroid (D,).

    Similarities are computed ``block`` rows at a time against the earlier members, so memory is
    O(block * m), linear in the cluster size (not an m x m matrix). The block size changes only the
    BLAS summation order, so the similarities agree across block sizes to float32 rounding.
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
    xo = x[order]  # (m, D) in visiting order
    threshold = 1.0 - eps
    kept = np.zeros(m, dtype=bool)
    kept[0] = True
    for s in range(0, m, block):
        e = min(m, s + block)
        sims = xo[s:e] @ xo[:e].T  # (e - s, e): this block against every member visited so far
        if compare_to == "all":
            sims[np.arange(e)[None, :] >= np.arange(s, e)[:, None]] = -2.0  # later or itself
            arg = sims.argmax(axis=1)
            top = sims[np.arange(e - s), arg]
            hit = top > threshold
            drop[order[s:e]] = hit
            best[order[s:e]] = top
            match[order[s:e]] = np.where(hit, order[arg], -1)
            continue
        for i in range(max(s, 1), e):
            row = np.where(kept[:i], sims[i - s, :i], -np.inf)
            j = int(np.argmax(row))
            best[order[i]] = row[j]
            if row[j] > threshold:
                drop[order[i]] = True
                match[order[i]] = order[j]
            else:
                kept[i] = True
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


DROP = np.dtype([("pos", "<i8"), ("sim", "<f4"), ("match", "<i8")])  # a SemDeDup removal
ALIVE = np.dtype([("pos", "<i8"), ("score", "<f4")])  # a survivor's prototype score


def _scan_records(folder: DataFolderLike, pattern: str, dtype, chunk: int = 1 << 20):
    """Yields the record arrays of every ``pattern`` file, ``chunk`` records at a time."""
    df = get_datafolder(folder)
    for name in sorted(df.list_files(glob_pattern=pattern)):
        with df.open(name, "rb") as f:
            while block := f.read(chunk * dtype.itemsize):
                yield np.frombuffer(block, dtype)


def split_oversized(x: np.ndarray, to_centroid: np.ndarray, max_size: int, seed: int,
                    backend: str) -> list[np.ndarray]:
    """Index groups of a cluster: itself when small, else k-means parts of at most ``max_size``."""
    m = len(x)
    if max_size <= 0 or m <= max_size:
        return [np.arange(m)]
    centroids = fit_centroids(x, math.ceil(2 * m / max_size), seed, backend)
    labels = np.argmax(x @ centroids.T, axis=1)
    parts = []
    for c in range(len(centroids)):
        idx = np.flatnonzero(labels == c)
        if len(idx) > max_size:  # still too big: consecutive runs of the visiting order
            idx = idx[np.argsort(to_centroid[idx], kind="stable")]
            parts += [np.sort(idx[s:s + max_size]) for s in range(0, len(idx), max_size)]
        elif len(idx):
            parts.append(idx)
    return parts


class ClusterPrune(PipelineStep):
    """Sharded by cluster: SemDeDup inside each cluster and the survivors' prototype scores.

    Writes ``prune/<task>.drops.bin`` (``DROP`` records) and ``prune/<task>.alive.bin``
    (``ALIVE`` records, only when prototypes are on).
    """

    type = "🧭 - SEMDEDUP"
    name = "per-cluster semdedup"

    def __init__(self, clusters: DataFolderLike, semdedup: bool, prototypes: bool,
                 eps: float = 0.1, keep: str = "hard", compare_to: str = "kept",
                 max_cluster_size: int = 50_000, seed: int = 0, backend: str = "faiss"):
        super().__init__()
        self.clusters, self.semdedup, self.prototypes = clusters, semdedup, prototypes
        self.eps, self.keep, self.compare_to = eps, keep, compare_to
        self.max_cluster_size, self.seed, self.backend = max_cluster_size, seed, backend

    def _prune(self, c: int, meta: dict, centroid: np.ndarray, drops, alive) -> None:
        x, pos, sims = read_cluster(self.clusters, meta, c)
        if not len(x):
            return
        self.stat_update("clusters")
        self.stat_update("cluster_members", value=len(x), unit="cluster")
        drop = np.zeros(len(x), bool)
        if self.semdedup:
            with self.track_time("cluster"):
                parts = split_oversized(x, x @ centroid, self.max_cluster_size, self.seed,
                                        self.backend)
                if len(parts) > 1:
                    self.stat_update("oversized_clusters")
                for idx in parts:
                    d, best, match = semdedup_cluster(x[idx], centroid, self.eps, self.keep,
                                                      self.compare_to)
                    hit = np.flatnonzero(d)
                    drop[idx[hit]] = True
                    rec = np.zeros(len(hit), DROP)
                    rec["pos"], rec["sim"] = pos[idx[hit]], best[hit]
                    rec["match"] = pos[idx[match[hit]]]
                    drops.write(rec.tobytes())
        self.stat_update("semdedup_drops", value=int(drop.sum()))
        if alive is not None:
            rec = np.zeros(int((~drop).sum()), ALIVE)
            rec["pos"], rec["score"] = pos[~drop], np.float32(1.0) - sims[~drop]
            alive.write(rec.tobytes())

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1):
        meta = load_meta(self.clusters)
        centroids = load_array(self.clusters, "centroids.npy")
        folder = get_datafolder(self.clusters)
        with contextlib.ExitStack() as files:  # records are streamed out cluster by cluster
            drops = files.enter_context(folder.open(f"prune/{rank:05d}.drops.bin", "wb"))
            alive = files.enter_context(folder.open(f"prune/{rank:05d}.alive.bin", "wb")
                                        ) if self.prototypes else None
            for c in range(rank, meta["k"], world_size):
                self._prune(c, meta, centroids[c], drops, alive)
        yield from ()


def order_key(score: np.ndarray, keep: str) -> np.ndarray:
    """uint32 keys whose ascending order is the keeping order (hard: largest score first)."""
    bits = np.ascontiguousarray(score, np.float32).view(np.uint32)
    key = np.where((bits >> 31).astype(bool), ~bits, bits | np.uint32(0x80000000)).astype(np.uint32)
    return ~key if keep == "hard" else key


def prototype_cutoff(clusters: DataFolderLike, keep_fraction: float, keep: str) -> dict:
    """The exact n_keep-th (key, position) over every survivor, in three streaming passes."""
    def keys():
        for rec in _scan_records(clusters, "prune/*.alive.bin", ALIVE):
            yield order_key(rec["score"], keep), rec["pos"]

    high = np.zeros(1 << 16, np.int64)
    for key, _ in keys():
        high += np.bincount(key >> 16, minlength=1 << 16)
    n_alive = int(high.sum())
    n_keep = int(round(keep_fraction * n_alive))
    out = {"n_alive": n_alive, "n_keep": n_keep, "keep": keep, "key": -1, "pos": -1}
    if n_keep == 0:
        return out
    b = int(np.searchsorted(np.cumsum(high), n_keep))  # bin holding the n_keep-th key
    rank = n_keep - int(high[:b].sum())
    low = np.zeros(1 << 16, np.int64)
    for key, _ in keys():
        low += np.bincount(key[(key >> 16) == b] & 0xFFFF, minlength=1 << 16)
    lo = int(np.searchsorted(np.cumsum(low), rank))
    rank -= int(low[:lo].sum())
    cut = np.uint32((b << 16) | lo)
    tied = np.sort(np.concatenate([p[k == cut] for k, p in keys()]))
    out.update(key=int(cut), pos=int(tied[rank - 1]))
    return out


class PrototypeSelect(PipelineStep):
    """One task: the prototype-pruning cut-off over every SemDeDup survivor -> ``prototypes.json``."""

    type = "🧭 - PROTOTYPES"
    name = "prototype select"

    def __init__(self, clusters: DataFolderLike, keep_fraction: float, keep: str = "hard"):
        super().__init__()
        self.clusters, self.keep_fraction, self.keep = clusters, keep_fraction, keep

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1):
        with self.track_time():
            cut = prototype_cutoff(self.clusters, self.keep_fraction, self.keep)
        self.stat_update("prototype_drops", value=cut["n_alive"] - cut["n_keep"])
        with get_datafolder(self.clusters).open("prototypes.json", "w") as f:
            json.dump(cut, f)
        yield from ()


class SemanticFilter(BaseFilter):
    """Drops documents that SemDeDup (``which="semdedup"``) or prototype pruning removed.

    Loads decisions one embedding shard at a time, for the shards its documents come from.
    """

    name = "🧭 semantic filter"

    def __init__(self, clusters: DataFolderLike, which: str,
                 exclusion_writer: DiskWriter | None = None):
        super().__init__(exclusion_writer)
        self.clusters, self.which = clusters, which
        self._shard: str | None = None
        self._decisions = None

    def decisions(self, shard: str):
        """semdedup: {row: (similarity, kept key)} of the shard's removed rows; prototype: the
        keep mask (n,) over the shard's rows (for rows SemDeDup kept)."""
        meta = load_meta(self.clusters)
        index = meta["shards"].index(shard)
        if self.which == "semdedup":
            out = {}
            for rec in _scan_records(self.clusters, "prune/*.drops.bin", DROP):
                mine = rec[(rec["pos"] >> POS_BITS) == index]
                for p, sim, m in zip(mine["pos"].tolist(), mine["sim"].tolist(),
                                     mine["match"].tolist()):
                    kept = f"{meta['shards'][m >> POS_BITS]}:{m & ((1 << POS_BITS) - 1)}"
                    out[p & ((1 << POS_BITS) - 1)] = (sim, kept)
            return out
        with get_datafolder(self.clusters).open("prototypes.json") as f:
            cut = json.load(f)
        key = order_key(np.float32(1.0) - shard_sims(self.clusters, shard), cut["keep"])
        pos = (np.int64(index) << POS_BITS) | np.arange(len(key), dtype=np.int64)
        keep = (key < cut["key"]) | ((key == cut["key"]) & (pos <= cut["pos"]))
        return keep if cut["n_keep"] else np.zeros(len(key), bool)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        shard, row = doc.metadata["_emb"].split(":")
        if shard != self._shard:
            self._shard, self._decisions = shard, self.decisions(shard)
        row = int(row)
        if self.which == "semdedup":
            hit = self._decisions.get(row)
            if hit is None:
                return True
            doc.metadata["semdedup_similarity"], doc.metadata["semdedup_kept"] = hit
            return False, "semdedup"
        return True if self._decisions[row] else (False, "prototype")
