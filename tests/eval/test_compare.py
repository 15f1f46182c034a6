"""Paired bootstrap comparison on constructed cases whose true difference is known."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

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


def test_bootstrap_settings_are_checked():
    from loki.errors import LokiError

    a = np.ones(5)
    with pytest.raises(LokiError, match="--n_boot must be >= 1"):
        paired_bootstrap(a, a, n_boot=0)
    with pytest.raises(LokiError, match=r"--confidence is a fraction in \(0, 1\)"):
        paired_bootstrap(a, a, confidence=95)
    with pytest.raises(LokiError, match="one checkpoint or more"):
        compare_scores([], [{"t": {0: 1.0}}])


@pytest.mark.parametrize("case", ["confidence 95", "n_boot 0", "empty side", "typo in --b",
                                  "typo in data_dir", "demo data not made", "device gpu", "output under a file",
                                  "transformers export in --b", "tokenizer that does not fit"])
def test_bad_input_is_refused_before_any_evaluation_or_write(case, tmp_path, demo_data, capsys,
                                                             monkeypatch):
    pytest.importorskip("lm_eval")
    from loki.cli import main
    from tests.eval.checkpoints import save_small_tokenizer, save_tiny_checkpoint

    def no_evaluation(*args, **kwargs):
        raise AssertionError("a checkpoint was evaluated")

    monkeypatch.setattr("loki.eval.adapter.LokiEvalLM", no_evaluation)
    tok = save_small_tokenizer(tmp_path / "tok")
    ckpt = str(save_tiny_checkpoint(tmp_path / "a.ckpt", tokenizer=str(tok.path),
                                    vocab_size=tok.vocab_size))
    (tmp_path / "afile").write_text("mine")
    args = {"--a": f"[{ckpt}]", "--b": f"[{ckpt}]", "--suite.preset": "demo",
            "--suite.offline": "true", "--suite.data_dir": str(demo_data), "--device": "cpu",
            "--output_dir": str(tmp_path / "cmp")}
    change, expected = {
        "confidence 95": ({"--confidence": "95"}, "--confidence is a fraction in (0, 1)"),
        "n_boot 0": ({"--n_boot": "0"}, "--n_boot must be >= 1"),
        "empty side": ({"--a": "[]"}, "--a is empty; give one checkpoint or more"),
        "typo in --b": ({"--b": f"[{ckpt},{tmp_path / 'b.ckpt'}]"},
                        f"checkpoint not found: {tmp_path / 'b.ckpt'}"),
        "typo in data_dir": ({"--suite.data_dir": str(tmp_path / "nowhere")},
                             "loki demo writes them, in its tasks stage; or point "
                             "--suite.data_dir elsewhere"),
        # the demo preset's data_dir defaults to where `loki demo` writes its tasks
        "demo data not made": ({"--suite.data_dir": "null"},
                               f"{tmp_path.resolve()}/data/demo/tasks/"),
        "device gpu": ({"--device": "gpu"}, "unknown device 'gpu'"),
        "output under a file": ({"--output_dir": str(tmp_path / "afile" / "cmp")},
                                "afile is a file, not a folder"),
        "transformers export in --b": ({"--b": f"[{tmp_path / 'model.safetensors'}]"},
                                       "is a Hugging Face transformers model"),
        "tokenizer that does not fit": ({"--tokenizer": "cl100k_base"}, "tokenizer mismatch"),
    }[case]
    if case == "transformers export in --b":
        from safetensors.torch import save_file

        save_file({"lm_head.weight": torch.zeros(2, 2)}, tmp_path / "model.safetensors")
    args.update(change)
    monkeypatch.chdir(tmp_path)  # relative paths (the default data_dir) lead nowhere
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as info:
        main(["compare", *[x for kv in args.items() for x in kv]])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and "\n" not in err and expected in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # no tasks/, no results
