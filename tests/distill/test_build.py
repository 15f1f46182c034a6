"""Building the candidate cache: layout, re-tokenization, regeneration, sharding, vocab checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from loki.distill.build import build_shard, finalize_cache
from loki.distill.build_config import BuildConfig
from loki.distill.cache import CandidateCache
from loki.errors import LokiError
from tests.distill.conftest import BENCHMARK, FakeTeacher, SentenceIndex, write_yaml


def _cfg(tmp_path, shards, spec, teachers, **kw) -> BuildConfig:
    prompts = {"shards": [shards], "num_prompts": 12, "prompt_tokens": 16, "max_new_tokens": 12,
               **kw.pop("prompts", {})}
    return BuildConfig(output=str(tmp_path / "cache"), tokenizer=spec, prompts=prompts,
                       teachers=teachers, **kw)


def test_cache_layout_and_micro_batch(tmp_path, student, shards, loki_ckpt):
    tok, spec = student
    cfg = _cfg(tmp_path, shards, spec, [{"kind": "loki", "checkpoint": loki_ckpt, "name": "lk",
                                         "top_logprobs": 3}], soft_top_k=3)
    fake = FakeTeacher("fake", copies=0)
    from loki.distill.teachers import make_teacher

    teachers = [fake, make_teacher(cfg.teachers[0])]
    cfg.teachers = [{"kind": "openai", "model": "fake"}, cfg.teachers[0]]  # names in the header
    info = build_shard(cfg, 0, 1, teachers=teachers)
    assert info["report"]["fake"]["kept"] == 12
    manifest = finalize_cache(cfg)
    cache = CandidateCache.open(cfg.output, tok.vocab_hash)
    assert cache.sources == ["ground_truth", "fake", "lk"] and cache.num_prompts == 12
    assert manifest["student"]["vocab_hash"] == tok.vocab_hash
    assert manifest["sources"][2]["sampling"]["max_new_tokens"] == 48
    b = cache.micro_batch(np.arange(4))
    P, k, T = b["input_ids"].shape
    assert (P, k, T) == (4, 3, 16 + 12 - 1)
    assert (b["labels"][..., :15] == -100).all()  # prompt positions never scored
    # candidate tokens sit after the prompt; bytes are the decoded continuation's bytes
    cont = tok.encode(" and so the story goes on.")[:12]
    assert b["labels"][0, 1, 15:15 + len(cont)].tolist() == cont
    assert int(b["n_bytes"][0, 1]) == len(b" and so the story goes on.")
    gt = b["labels"][0, 0][b["labels"][0, 0] != -100].tolist()
    assert int(b["n_bytes"][0, 0]) == len(tok.decode(gt).encode())
    assert (b["input_ids"][:, 0, :16] == b["input_ids"][:, 2, :16]).all()  # shared prompt
    # the Loki teacher shares the vocabulary: exact soft targets on its own candidate only
    assert (b["soft_ids"][:, 2, 15] >= 0).all() and (b["soft_ids"][:, :2] == -1).all()
    assert manifest["report"]["lk"]["soft_targets"] == 12
    assert json.loads((tmp_path / "cache" / "report.json").read_text()) == manifest["report"]


def test_regeneration_then_drop(tmp_path, student, shards):
    tok, spec = student
    cfg = _cfg(tmp_path, shards, spec, [{"kind": "openai", "model": "a"},
                                        {"kind": "openai", "model": "b"}],
               decontam={"max_tries": 3})
    twice = FakeTeacher("twice", copies=2)  # clean on the third try
    always = FakeTeacher("always", copies=99)  # never clean: dropped after 3 tries
    info = build_shard(cfg, 0, 1, index=SentenceIndex(), teachers=[twice, always])
    rep = info["report"]
    assert rep["twice"] == {"candidates": 12, "kept": 12, "regenerations": 24,
                            "dropped_benchmark": 0, "dropped_empty": 0, "soft_targets": 0,
                            "soft_unaligned": 0}
    assert rep["always"]["kept"] == 0 and rep["always"]["dropped_benchmark"] == 12
    assert rep["always"]["regenerations"] == 24
    assert [n for n, _ in twice.calls] == [12, 12, 12]
    assert len({s for _, s in twice.calls}) == 3  # a new seed per try
    cache_dir = tmp_path / "cache" / "shards" / "cand-00000"
    attempts = np.load(cache_dir / "attempts.npy")
    cont_len = np.load(cache_dir / "cont_len.npy")
    assert (attempts[:, 1] == 3).all() and (cont_len[:, 2] == 0).all()
    assert (np.load(cache_dir / "seeds.npy")[:, 1] == twice.calls[2][1]).all()


def test_real_benchmark_index_is_accepted(tmp_path, student, shards):
    from loki.filtering.decontam import BenchmarkIndex

    index = BenchmarkIndex(n=13)
    index.add_text(BENCHMARK, "toy")
    tok, spec = student
    cfg = _cfg(tmp_path, shards, spec, [{"kind": "openai", "model": "a"}],
               decontam={"max_tries": 2}, prompts={"num_prompts": 3})
    info = build_shard(cfg, 0, 1, index=index, teachers=[FakeTeacher("t", copies=1)])
    assert info["report"]["t"]["regenerations"] == 3 and info["report"]["t"]["kept"] == 3


def test_tasks_split_prompts_and_finalize_waits_for_all(tmp_path, student, shards, loki_ckpt):
    tok, spec = student
    cfg = _cfg(tmp_path, shards, spec, [{"kind": "loki", "checkpoint": loki_ckpt}],
               executor={"tasks": 2})
    build_shard(cfg, 1, 2)
    with pytest.raises(LokiError, match=r"tasks \[0\] have not finished"):
        finalize_cache(cfg)
    build_shard(cfg, 0, 2)
    manifest = finalize_cache(cfg)
    cache = CandidateCache.open(cfg.output)
    assert manifest["prompts"] == 12
    assert sorted(cache.gather("prompt_index", np.arange(cache.num_prompts)).tolist()) == list(range(12))


def test_cli_build_through_datatrove(tmp_path, student, shards, loki_ckpt, capsys):
    from loki.distill.cli import main

    tok, spec = student
    config = write_yaml(tmp_path / "d.yaml", {
        "output": str(tmp_path / "cache"), "tokenizer": spec,
        "prompts": {"shards": [shards], "num_prompts": 4, "prompt_tokens": 8,
                    "max_new_tokens": 6},
        "teachers": [{"kind": "loki", "checkpoint": loki_ckpt, "name": "lk",
                      "sampling": {"max_new_tokens": 6, "temperature": 1.0}}],
        "executor": {"kind": "local", "tasks": 2, "workers": 1}})
    main(["build", "--config", str(config)])
    said = capsys.readouterr().out.splitlines()[-3:]
    assert said[0] == f"candidate cache: {tmp_path / 'cache'} (4 prompts; counts in " \
                      f"{tmp_path / 'cache'}/report.json)"
    assert said[1].startswith("  ground_truth  4 windows; ")
    assert said[2].startswith("  lk            4 of 4 kept; 0 benchmark copies dropped after 0 ")
    cache = CandidateCache.open(tmp_path / "cache", tok.vocab_hash)
    assert cache.num_prompts == 4 and cache.sources == ["ground_truth", "lk"]
    assert (tmp_path / "cache" / "logs" / "completions").is_dir()
    assert torch.is_tensor(cache.micro_batch(np.arange(2))["input_ids"])
    main(["build", "--config", str(config)])  # a rerun skips the finished tasks
    with pytest.raises(LokiError, match="another config or tokenizer"):
        main(["build", "--config", str(config), "--prompts.num_prompts", "5"])


def test_vocab_hash_mismatch_is_a_clear_error(tmp_path, student, shards, loki_ckpt):
    tok, spec = student
    cfg = _cfg(tmp_path, shards, spec, [{"kind": "loki", "checkpoint": loki_ckpt}],
               prompts={"num_prompts": 2})
    build_shard(cfg, 0, 1)
    finalize_cache(cfg)
    with pytest.raises(LokiError, match="vocab_hash .* rebuild the cache"):
        CandidateCache.open(cfg.output, vocab_hash="0123456789abcdef")
    from loki.tokenizer import EOT, pruned_tokenizer

    other = pruned_tokenizer(tok, sorted(tok.ranks, key=tok.ranks.__getitem__)[:900], [EOT], "o")
    other.save(tmp_path / "other")
    with pytest.raises(LokiError, match="has vocab_hash"):
        build_shard(_cfg(tmp_path / "x", shards, str(tmp_path / "other"), cfg.teachers), 0, 1)


def test_loki_teacher_with_another_vocabulary_is_refused(tmp_path, student, shards, loki_ckpt):
    import torch as _torch

    tok, spec = student
    ckpt = _torch.load(loki_ckpt, weights_only=False)
    ckpt["loki"]["config"]["vocab_size"] += 7
    ckpt["state_dict"] = {k: (_torch.cat([v, v[:7]]) if v.size(0) == tok.vocab_size else v)
                          for k, v in ckpt["state_dict"].items()}
    _torch.save(ckpt, tmp_path / "other.ckpt")
    cfg = _cfg(tmp_path, shards, spec, [{"kind": "loki", "checkpoint": str(tmp_path / "other.ckpt")}],
               prompts={"num_prompts": 2})
    with pytest.raises(LokiError, match="trained with the student's tokenizer"):
        build_shard(cfg, 0, 1)


def test_bad_teacher_config():
    from loki.distill.teachers import make_teacher

    with pytest.raises(LokiError, match="kind"):
        make_teacher({"kind": "gpt"})
    with pytest.raises(LokiError, match="unknown keys"):
        make_teacher({"kind": "hf", "model": "x", "temprature": 1})


@pytest.mark.parametrize("bad", [{"prompts": {"num_prompts": 0}},
                                 {"prompts": {"min_ground_truth": 0}},
                                 {"soft_top_k": -1}])
def test_bad_build_numbers_are_refused_before_any_cache_is_read(bad):
    with pytest.raises(LokiError, match="must be >= "):
        BuildConfig(teachers=[{"kind": "hf", "model": "x"}], **bad)
