"""Quality classifier: frozen sentence embeddings + a linear head (phi-1 / FineWeb-Edu style).

``loki filter train-quality --config ...`` fits the head on labelled JSONL: ``label`` 0/1 gives a
LogisticRegression (score = P(good)); a 0-5 ``score`` (e.g. LLM annotations, FineWeb-Edu style)
gives a Ridge regressor (score on the 0-5 scale). The head is saved as plain JSON (weights,
bias, kind, embedder), so applying it needs numpy only and loading it runs no pickled code.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from datatrove.data import Document
from datatrove.io import DataFolderLike
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.writers.disk_base import DiskWriter

from loki import atomic
from loki._optional import require
from loki.errors import LokiError
from loki.filtering.config import TrainQualityConfig
from loki.filtering.embed import EmbeddingStore, check_embedder, load_embedder


def seed_path() -> Path:
    """The packaged seed set: encyclopedic/literary/technical prose (1) vs boilerplate/noise (0)."""
    return Path(str(resources.files("loki.filtering") / "seed" / "quality_seed.jsonl"))


def read_labelled(path: str, label_key: str = "label", score_key: str = "score"
                  ) -> tuple[list[str], np.ndarray, str]:
    """(texts, targets, kind) with kind ``binary`` or ``score``; bad lines are a LokiError."""
    path = str(seed_path()) if path == "seed" else path
    if not os.path.exists(path):
        raise LokiError(f"quality training data {path!r} does not exist")
    texts, targets, kinds = [], [], set()
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                key = label_key if label_key in row else score_key
                value, text = row[key], row["text"]
                target = float(value)
            except KeyError as err:
                raise LokiError(f"{path}:{n}: needs text and {label_key} or {score_key} (no "
                                f"{err.args[0]!r})") from err
            except (ValueError, TypeError) as err:
                raise LokiError(f"{path}:{n}: needs text and {label_key} or {score_key} ({err})") from err
            if (key == label_key and target not in (0.0, 1.0)) or not 0 <= target <= 5:
                raise LokiError(f"{path}:{n}: {key} {value!r} is out of range: a {label_key} is "
                                f"0 or 1, a {score_key} from 0 to 5")
            targets.append(target)
            kinds.add("binary" if key == label_key else "score")
            if not isinstance(text, str) or not text.strip():  # null would train as "None"
                raise LokiError(f"{path}:{n}: text must be a non-empty string, not {text!r}; fix "
                                "or remove the line")
            texts.append(text)
    if len(kinds) != 1:
        raise LokiError(f"{path}: use either {label_key} (0/1) or {score_key} (0-5) on every line")
    kind = kinds.pop()
    y = np.asarray(targets, dtype=np.float32)
    if kind == "binary" and len(set(y.tolist())) != 2:
        raise LokiError(f"{path}: binary labels need both classes 0 and 1")
    return texts, y, kind


@dataclass
class QualityHead:
    """A linear head over normalized embeddings."""

    weights: np.ndarray
    bias: float
    kind: str  # binary | score
    embedder: str
    metrics: dict

    def score(self, x: np.ndarray) -> np.ndarray:
        """x (N, D) -> (N,) P(good) for binary heads, predicted 0-5 score otherwise."""
        z = x @ self.weights + self.bias
        return 1.0 / (1.0 + np.exp(-z)) if self.kind == "binary" else z

    def save(self, path: str) -> None:
        """Written to a temp file beside ``path`` and renamed, so a reader (or a crash) never
        sees half a head."""
        atomic.write_text(path, json.dumps({
            "weights": self.weights.tolist(), "bias": self.bias, "kind": self.kind,
            "embedder": self.embedder, "metrics": self.metrics}))

    @classmethod
    def load(cls, path: str) -> QualityHead:
        try:
            with open(path) as f:
                d = json.load(f)
            return cls(np.asarray(d["weights"], np.float32), float(d["bias"]), d["kind"],
                       d["embedder"], d.get("metrics", {}))
        except (OSError, KeyError, ValueError) as err:
            raise LokiError(f"cannot read quality head {path!r} ({err}); "
                            "train one with `loki filter train-quality`") from err


def train_quality(cfg: TrainQualityConfig, embedder=None) -> QualityHead:
    """Embed the labelled texts, fit the head, report held-out metrics, save to ``cfg.output``.
    Every input is checked before the embedder loads, so a mistake costs no training time."""
    lm = require("sklearn.linear_model", "data")
    check_head_output(cfg.output, cfg.overwrite)
    texts, y, kind = read_labelled(cfg.data, cfg.label_key, cfg.score_key)
    rng = np.random.default_rng(cfg.seed)
    perm = rng.permutation(len(texts))
    n_test = int(len(texts) * cfg.holdout)
    test, train = perm[:n_test], perm[n_test:]
    if kind == "binary" and len(set(y[train].tolist())) != 2:
        raise LokiError(f"holdout {cfg.holdout} leaves {len(train)} training rows of one class "
                        f"in {cfg.data}; lower --holdout or add labelled rows")
    if embedder is None:
        check_embedder(cfg.embedder)
        embedder = load_embedder(cfg.embedder)
    x = embedder.encode([t[: cfg.max_chars] for t in texts])  # (N, D)

    def fit(idx):
        model = lm.LogisticRegression(C=10.0, max_iter=2000) if kind == "binary" else lm.Ridge(1.0)
        return model.fit(x[idx], y[idx])

    metrics: dict = {"n_train": int(len(train)), "n_test": int(n_test)}
    if n_test:
        pred = fit(train).predict(x[test])
        if kind == "binary":
            metrics["heldout_accuracy"] = float((pred == y[test]).mean())
        else:
            metrics["heldout_mae"] = float(np.abs(pred - y[test]).mean())
    model = fit(perm)  # final head on everything
    head = QualityHead(np.asarray(model.coef_, np.float32).reshape(-1), float(np.ravel(model.intercept_)[0]),
                       kind, cfg.embedder, metrics)
    head.save(cfg.output)
    return head


def check_head_output(path: str, overwrite: bool) -> None:
    """One-line LokiError, before any training, when ``path`` cannot take the head."""
    from loki.output import check_writable

    if os.path.isdir(path):
        raise LokiError(f"quality head output {path} is a folder; name a .json file")
    if os.path.exists(path) and not overwrite:
        raise LokiError(f"quality head {path} exists; pass --overwrite true to replace it, or "
                        "choose another --output")
    check_writable(os.path.dirname(os.path.abspath(path)), "quality head folder")


class QualityFilter(BaseFilter):
    """Scores each document from its stored embedding; keeps score >= threshold."""

    name = "🎓 quality classifier"

    def __init__(self, model_path: str, embeddings: DataFolderLike, threshold: float,
                 exclusion_writer: DiskWriter | None = None):
        super().__init__(exclusion_writer)
        self.model_path, self.embeddings, self.threshold = model_path, embeddings, threshold
        self._head: QualityHead | None = None
        self._store: EmbeddingStore | None = None

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if self._head is None:
            self._head = QualityHead.load(self.model_path)
            self._store = EmbeddingStore(self.embeddings)
        score = float(self._head.score(self._store.get(doc.metadata["_emb"])[None, :])[0])
        doc.metadata["quality"] = round(score, 4)
        self.stat_update("quality_score_x1000", value=int(score * 1000))
        return True if score >= self.threshold else (False, "low_quality")
