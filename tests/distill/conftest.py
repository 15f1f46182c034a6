"""Tiny fixtures for distillation tests: a 1k-token student tokenizer (the first 1,000 cl100k
merges, closed under BPE), token shards of real prose, and a random Loki teacher checkpoint."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from loki.config import LokiConfig
from loki.data.shard_writer import ShardWriter
from loki.data.tokenize import tokenizer_info
from loki.distill.build import build_shard, finalize_cache
from loki.distill.build_config import BuildConfig
from loki.model import Loki
from loki.tokenizer import EOT, LokiTokenizer, pruned_tokenizer

BENCHMARK = ("the quick brown fox jumps over the lazy dog while seven wizards quietly judge "
             "boxing matches in the old town square")


@pytest.fixture(scope="session")
def student(tmp_path_factory) -> tuple[LokiTokenizer, str]:
    base = LokiTokenizer.from_tiktoken("cl100k_base")
    kept = sorted(base.ranks, key=base.ranks.__getitem__)[:1000]
    tok = pruned_tokenizer(base, kept, [EOT], "student-1k")
    path = tmp_path_factory.mktemp("tok") / "student"
    tok.save(path)
    return tok, str(path)


@pytest.fixture(scope="session")
def shards(student, tmp_path_factory) -> str:
    tok, spec = student
    folder = tmp_path_factory.mktemp("shards") / "web"
    writer = ShardWriter(folder, "web", tokenizer_info(tok, spec), shard_tokens=4000)
    text = Path(argparse.__file__).read_text()
    for chunk in text.split("\n\n"):
        if len(chunk) > 200:
            writer.add_document(tok.encode(chunk))
    writer.close()
    return str(folder)


@pytest.fixture(scope="session")
def loki_ckpt(student, tmp_path_factory) -> str:
    tok, _ = student
    config = LokiConfig(n_layer=1, n_head=2, n_embd=32, vocab_size=tok.vocab_size, block_size=64)
    model = Loki(config)
    path = tmp_path_factory.mktemp("teacher") / "loki-teacher.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": {}, "loki": {"config": config.to_dict()}}, path)
    return str(path)


class FakeTeacher:
    """Answers from a script: ``copies`` first tries per prompt copy the benchmark sentence."""

    shares_student_vocab = False

    def __init__(self, name: str, copies: int, text: str = " and so the story goes on.") -> None:
        self.name, self.copies, self.text = name, copies, text
        self.calls: list[tuple[int, int]] = []  # (prompts, seed)
        self.tries: dict[str, int] = {}

    def identity(self) -> dict:
        return {"kind": "fake", "copies": self.copies}

    def generate(self, prompts, prompt_ids, seed):
        from loki.distill.teachers import Generation

        self.calls.append((len(prompts), seed))
        out = []
        for p in prompts:
            n = self.tries[p] = self.tries.get(p, 0) + 1
            out.append(Generation(text=" " + BENCHMARK if n <= self.copies else self.text))
        return out


class SentenceIndex:
    def contaminated(self, text: str) -> bool:
        return "seven wizards quietly judge" in text


@pytest.fixture(scope="session")
def cache(student, shards, loki_ckpt, tmp_path_factory) -> str:
    """A finalized candidate cache: 24 prompts of 12 tokens from ``shards``, one Loki teacher
    candidate of 10 tokens each beside the ground truth."""
    _, spec = student
    out = tmp_path_factory.mktemp("cache") / "cache"
    cfg = BuildConfig(output=str(out), tokenizer=spec,
                      prompts={"shards": [shards], "num_prompts": 24, "prompt_tokens": 12,
                               "max_new_tokens": 10},
                      teachers=[{"kind": "loki", "checkpoint": loki_ckpt, "name": "lk",
                                 "sampling": {"max_new_tokens": 10}}])
    build_shard(cfg)
    finalize_cache(cfg)
    return str(out)


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))  # JSON is YAML
    return path
