"""SemDeDup and SSL-prototype pruning: the pure functions and the MiniLM paraphrase case."""

from __future__ import annotations

import numpy as np
import pytest

from loki.filtering.semantic import prototype_keep, semdedup, semdedup_cluster, spherical_kmeans


def unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def chain():
    # A~B and B~C are above 0.9 cosine, A~C is below: the two comparison rules differ here
    a = unit([1.0, 0.0, 0.0])
    b = unit([np.cos(0.4), np.sin(0.4), 0.0])
    c = unit([np.cos(0.8), np.sin(0.8), 0.0])
    return np.stack([a, b, c]), unit([1.0, 0.0, 0.0])


def test_compare_to_kept_versus_all_earlier_members():
    x, centroid = chain()
    assert x[0] @ x[1] > 0.9 and x[1] @ x[2] > 0.9 and x[0] @ x[2] < 0.9
    # easy order visits A (nearest the centroid) first, then B, then C
    drop, best, match = semdedup_cluster(x, centroid, eps=0.1, keep="easy", compare_to="kept")
    assert drop.tolist() == [False, True, False]  # C is compared with A only (B was dropped)
    assert match[1] == 0
    drop, _, _ = semdedup_cluster(x, centroid, eps=0.1, keep="easy", compare_to="all")
    assert drop.tolist() == [False, True, True]  # reference rule: C is close to dropped B


def test_keep_hard_keeps_the_member_farthest_from_the_centroid():
    x, centroid = chain()
    drop, _, _ = semdedup_cluster(x[:2], centroid, eps=0.1, keep="hard")
    assert drop.tolist() == [True, False]
    drop, _, _ = semdedup_cluster(x[:2], centroid, eps=0.1, keep="easy")
    assert drop.tolist() == [False, True]


def test_eps_sets_the_threshold_and_clusters_are_independent():
    rng = np.random.default_rng(0)
    base = unit(rng.normal(size=(20, 32)))
    near = unit(base + 0.05 * rng.normal(size=base.shape))  # cosine ~0.96 to its original
    x = np.concatenate([base, near])
    labels, centroids = spherical_kmeans(x, 4, seed=0)
    assert semdedup(x, labels, centroids, eps=0.1).sum() == 20
    assert semdedup(x, labels, centroids, eps=0.001).sum() == 0


@pytest.mark.parametrize("keep", ["hard", "easy"])
def test_prototype_pruning_keeps_fraction_and_direction(keep):
    rng = np.random.default_rng(1)
    x = unit(rng.normal(size=(200, 16)))
    labels, centroids = spherical_kmeans(x, 5, seed=0)
    mask = prototype_keep(x, centroids, 0.3, keep)
    assert mask.sum() == 60
    dist = 1 - (x @ centroids.T).max(axis=1)
    if keep == "hard":
        assert dist[mask].min() >= dist[~mask].max()
    else:
        assert dist[mask].max() <= dist[~mask].min()


PARAPHRASES = [
    ("The committee approved the new budget after a long debate about school funding and road "
     "repairs. Members argued for hours before the final vote.",
     "After a lengthy debate about funding for schools and repairing roads, the committee approved "
     "the new budget. The members argued for hours before they finally voted."),
    ("Photosynthesis lets plants turn sunlight, water and carbon dioxide into sugar and oxygen, "
     "which feeds almost all life on Earth.",
     "Plants use photosynthesis to convert sunlight, carbon dioxide and water into oxygen and "
     "sugar, feeding nearly all life on Earth."),
    ("The violin is a wooden string instrument played with a bow; it has four strings tuned in "
     "perfect fifths.",
     "A violin is a string instrument made of wood and played with a bow; its four strings are "
     "tuned in perfect fifths."),
]
OTHERS = ["Glaciers carve deep valleys as they slowly move downhill under their own weight.",
          "The recipe calls for two cups of flour, a pinch of salt and warm milk.",
          "Chess openings are studied for centuries, yet new ideas still appear every year."]


def test_minilm_paraphrases_removed_at_documented_eps_kept_at_tighter(minilm):
    texts = [t for pair in PARAPHRASES for t in pair] + OTHERS
    x = minilm.encode(texts)
    labels, centroids = np.zeros(len(x), dtype=np.int64), unit(x.mean(axis=0))[None, :]
    drop = semdedup(x, labels, centroids, eps=0.1)  # the demo config's eps
    for i in range(len(PARAPHRASES)):
        assert drop[2 * i] != drop[2 * i + 1]  # exactly one of each pair goes
    assert not drop[6:].any()
    assert not semdedup(x, labels, centroids, eps=0.02).any()
