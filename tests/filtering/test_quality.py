"""Quality classifier: trained on the packaged seed set with real MiniLM embeddings."""

from __future__ import annotations

import json
import re

import pytest

from loki.errors import LokiError
from loki.filtering.config import TrainQualityConfig
from loki.filtering.quality import QualityHead, read_labelled, seed_path, train_quality

GOOD = [
    "The river delta formed over thousands of years as sediment carried downstream settled where "
    "the current slowed, creating fertile land that early farming communities relied upon.",
    "In a binary search, the algorithm compares the target with the middle element and discards "
    "the half of the list that cannot contain it, so each step halves the remaining work.",
    "The play opens on a windswept heath, where three figures speak in riddles about a king "
    "whose ambition will soon outgrow his loyalty and his sense.",
]
BAD = [
    "Home | Shop | Deals | Login | Cart (0) | Free shipping on orders over $25!!! Click here now",
    "best cheap buy online sale discount best price buy now free promo code coupon 2024 deal",
    "Accept cookies? Settings | Decline | Subscribe to our newsletter | Share | Tweet | Pin it",
]


def test_seed_set_is_shipped_and_balanced():
    texts, y, kind = read_labelled("seed")
    assert kind == "binary" and 200 <= len(texts) <= 400
    assert 0.3 < y.mean() < 0.7
    assert seed_path().name == "quality_seed.jsonl"


def test_train_quality_separates_fixture_classes(tmp_path, minilm):
    subset = tmp_path / "seed_subset.jsonl"  # every 3rd seed row keeps MiniLM time to seconds
    subset.write_text("".join(seed_path().read_text(encoding="utf-8").splitlines(True)[::3]))
    cfg = TrainQualityConfig(data=str(subset), output=str(tmp_path / "q.json"), max_chars=200)
    head = train_quality(cfg, embedder=minilm)
    assert head.metrics["heldout_accuracy"] >= 0.9
    head = QualityHead.load(cfg.output)
    good, bad = head.score(minilm.encode(GOOD)), head.score(minilm.encode(BAD))
    assert good.min() > 0.5 > bad.max()


def test_score_labels_give_a_regression_head(tmp_path):
    rows = [{"text": t, "score": 4.5} for t in GOOD] * 3 + [{"text": t, "score": 0.5} for t in BAD] * 3
    path = tmp_path / "scores.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    head = train_quality(TrainQualityConfig(data=str(path), output=str(tmp_path / "r.json"),
                                            embedder="hashing", holdout=0.0))
    assert head.kind == "score"
    from loki.filtering.embed import load_embedder

    scores = head.score(load_embedder("hashing").encode(GOOD + BAD))
    assert scores[:3].min() > 2.5 > scores[3:].max()


def test_bad_training_data_is_a_loki_error(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"text": "only one class", "label": 1}) + "\n")
    with pytest.raises(LokiError, match="both classes"):
        read_labelled(str(path))
    with pytest.raises(LokiError, match="does not exist"):
        read_labelled(str(tmp_path / "missing.jsonl"))


def test_a_failed_save_leaves_the_earlier_head_whole(tmp_path, monkeypatch):
    import numpy as np

    path = tmp_path / "q.json"
    head = QualityHead(np.ones(3, np.float32), 0.0, "binary", "hashing", {})
    head.save(str(path))
    before = path.read_text()

    def crash(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("os.fsync", crash)  # the new head written, not yet renamed in
    with pytest.raises(KeyboardInterrupt):
        head.save(str(path))
    assert path.read_text() == before and [p.name for p in tmp_path.iterdir()] == ["q.json"]


@pytest.mark.parametrize(("row", "said"), [
    ({"text": "a page", "label": 2}, "label 2 is out of range"),
    ({"text": "a page", "label": 0.7}, "label 0.7 is out of range"),
    ({"text": "a page", "score": 59}, "score 59 is out of range"),
    ({"text": "a page"}, "(no 'score')"),
])
def test_labels_and_scores_out_of_range_name_the_line(tmp_path, row, said):
    path = tmp_path / "labelled.jsonl"
    path.write_text(json.dumps({"text": "fine", "label": 1}) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(LokiError, match=re.escape(f"{path}:2: ") + ".*" + re.escape(said)):
        read_labelled(str(path))
