"""Tiny Loki checkpoints in the Lightning format, made in the tests (no downloads)."""

from __future__ import annotations

from pathlib import Path

import torch

from loki.module import LokiLM

CL100K_VOCAB = 100_277


def save_tiny_checkpoint(path: Path, tokenizer: str = "cl100k_base", seed: int = 0,
                         vocab_size: int = CL100K_VOCAB, **overrides) -> Path:
    """A ``tiny`` LokiLM saved as ``Trainer.save_checkpoint`` lays it out."""
    torch.manual_seed(seed)
    module = LokiLM("tiny", vocab_size=vocab_size, tokenizer=tokenizer,
                    config_overrides=overrides or None)
    ckpt = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
            "loki": {"tokens_seen": 0, "config": module.config.to_dict()}}
    torch.save(ckpt, path)
    return path


def save_small_tokenizer(folder: Path, n_ranks: int = 300):
    """cl100k_base's first ``n_ranks`` tokens (all single bytes and early merges) + EOT, saved;
    returns the tokenizer with ``.path`` set to the folder."""
    from loki.tokenizer import EOT, LokiTokenizer

    base = LokiTokenizer.from_spec("cl100k_base")
    tok = LokiTokenizer(name=f"cl100k-{n_ranks}", pat_str=base.pat_str,
                        ranks={t: r for t, r in base.ranks.items() if r < n_ranks},
                        specials={EOT: n_ranks}, base="cl100k_base")
    tok.path = tok.save(folder)
    return tok
