"""Paired bootstrap comparison on constructed cases whose true difference is known."""

from __future__ import annotations

import json

import numpy as np
import pytest

from loki.eval.compare import compare_scores, paired_bootstrap


def test_known_zero_difference_ci_covers_zero():
    rng = np.random.default_rng(1)
    a = (rng.random(400) < 0.6).astype(float)
    b = (rng.random(400) < 0.6).astype(float)  # same accuracy: true difference 0
    r = paired_bootstrap(a, b, n_boot=4000, seed=0)
    assert r["ci_low"] < 0 < r["ci_high"] and r["p_value"] > 0.05
    same = paired_bootstrap(a, a, n_boot=500)
    assert same["diff"] == same["ci_low"] == same["ci_high"] == 0.0 and same["p_value"] == 1.0


def test_known_nonzero_difference_is_detected():
    rng = np.random.default_rng(2)
    a = (rng.random(400) < 0.6).astype(float)
    # B fixes half of A's errors: true difference = 0.5 * 0.4 = 0.2
    b = np.where((a == 0) & (rng.random(400) < 0.5), 1.0, a)
    r = paired_bootstrap(a, b, n_boot=4000, seed=0)
    assert 0 < r["ci_low"] < 0.2 < r["ci_high"]
    assert r["p_value"] < 0.001
    assert r["diff"] == pytest.approx(b.mean() - a.mean())


def test_seed_sets_are_averaged_per_item():
    a1 = {"t": {0: 1.0, 1: 0.0, 2: 1.0}}
    a2 = {"t": {0: 0.0, 1: 0.0, 2: 1.0, 3: 1.0}}  # item 3 missing elsewhere: dropped
    b1 = {"t": {0: 1.0, 1: 1.0, 2: 1.0}}
    r = compare_scores([a1, a2], [b1], n_boot=200)["t"]
    assert r["n"] == 3
    assert r["mean_a"] == pytest.approx((0.5 + 0.0 + 1.0) / 3)
    assert r["diff"] == pytest.approx(1.0 - 0.5)


def test_compare_cli_same_checkpoint_is_exactly_zero(tmp_path, demo_data):
    pytest.importorskip("lm_eval")
    from loki.eval.compare import main
    from tests.eval.checkpoints import save_small_tokenizer, save_tiny_checkpoint

    tok = save_small_tokenizer(tmp_path / "tok")
    ckpt = save_tiny_checkpoint(tmp_path / "a.ckpt", tokenizer=str(tok.path),
                                vocab_size=tok.vocab_size)
    main(["--a", f"[{ckpt}]", "--b", f"[{ckpt},{ckpt}]", "--suite.preset", "demo",
          "--suite.offline", "true", "--suite.data_dir", str(demo_data), "--n_boot", "200",
          "--device", "cpu", "--output_dir", str(tmp_path / "cmp")])
    result = json.loads((tmp_path / "cmp" / "compare.json").read_text())["tasks"]
    assert set(result) == {"Demo cloze", "Demo last word", "Demo minimal pairs"}
    assert result["Demo cloze"]["n"] == 6
    for r in result.values():
        assert r["diff"] == r["ci_low"] == r["ci_high"] == 0.0
    assert "Demo cloze | 6 |" in (tmp_path / "cmp" / "compare.md").read_text()
