"""Fixtures for the export tests: a pruned cl100k tokenizer, a tiny Loki trained on real text
for a few dozen steps (the stand-in for the demo checkpoint: CI has no demo run), and its
export. Everything is made here, on the CPU, in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# the eval tests' autouse fixtures: one torch thread for tiny matmuls, no lm-eval env probe
from tests.eval.conftest import _no_env_probe, _one_thread  # noqa: F401

VOCAB = 1500  # pruned size: small enough to train and convert in a second


def corpus_text() -> str:
    """Real prose and code: the standard library's argparse and textwrap sources."""
    import argparse
    import textwrap

    return "\n\n".join(Path(m.__file__).read_text() for m in (argparse, textwrap))


@pytest.fixture(scope="session")
def pruned(tmp_path_factory):
    """cl100k_base pruned to VOCAB ids by usage on the corpus (BPE closure kept, as
    ``loki tokenizer prune`` does), with <|endoftext|> and <|pad|>; saved, ``.path`` set."""
    from collections import Counter

    from loki.tokenizer import EOT, PAD, LokiTokenizer, pruned_tokenizer, select_vocabulary

    base = LokiTokenizer.from_tiktoken("cl100k_base")
    usage = Counter(base.encode(corpus_text()))
    kept = select_vocabulary(base.ranks, [base.token_bytes(i) for i, _ in usage.most_common()],
                             VOCAB - 2)
    tok = pruned_tokenizer(base, kept, [EOT, PAD], name=f"cl100k-{VOCAB}")
    tok.path = str(tok.save(tmp_path_factory.mktemp("tok")))
    return tok


def save_trained_checkpoint(path: Path, tok, steps: int = 40, **overrides) -> Path:
    """A ``tiny`` LokiLM trained ``steps`` AdamW steps on the corpus, saved in the Lightning
    layout (as ``tests/eval/checkpoints.py``), so greedy decoding has clear winners."""
    from loki.module import LokiLM

    torch.manual_seed(0)
    module = LokiLM("tiny", vocab_size=tok.vocab_size, tokenizer=tok.path,
                    config_overrides=overrides or None)
    model, T, B = module.model, 32, 8
    ids = torch.tensor(tok.encode(corpus_text()))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - T - 1, (B,)).tolist()
        x = torch.stack([ids[s:s + T] for s in starts])
        y = torch.stack([ids[s + 1:s + T + 1] for s in starts])
        _, loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad()
    ckpt = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
            "loki": {"tokens_seen": steps * B * T, "config": module.config.to_dict()}}
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="session")
def trained_ckpt(tmp_path_factory, pruned) -> Path:
    return save_trained_checkpoint(tmp_path_factory.mktemp("trained") / "last.ckpt", pruned)


@pytest.fixture(scope="session")
def exported(tmp_path_factory, trained_ckpt) -> Path:
    from loki.export.hf import export_hf

    out = tmp_path_factory.mktemp("export") / "hf"
    export_hf(trained_ckpt, out)
    return out


@pytest.fixture(scope="session")
def hf_model(exported):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(exported, trust_remote_code=True,
                                                dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def loki_model(trained_ckpt):
    from loki.eval.loading import load_for_eval

    return load_for_eval(trained_ckpt, device="cpu")
