"""Load a checkpoint together with the tokenizer it was trained with, refusing mismatches.

Every eval tool (adapter, generate, probe, compare) goes through ``load_for_eval`` so that a
checkpoint is never scored with token ids it was not trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from loki.config import LokiConfig
from loki.errors import LokiError
from loki.model import Loki

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


@dataclass
class EvalModel:
    """A model in eval mode, its config, its tokenizer and where they came from."""

    model: Loki
    config: LokiConfig
    tokenizer: object  # loki.tokenizer.LokiTokenizer
    checkpoint: str
    tokenizer_spec: str


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return None
    if dtype not in DTYPES:
        raise LokiError(f"unknown dtype {dtype!r}; choose one of: auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


DEVICES = "auto, cpu, cuda, cuda:N (N: a GPU index)"


def resolve_device(device: str | None) -> torch.device:
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``; anything else, or a GPU
    that is not there, is a one-line LokiError listing the valid values."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        resolved = None
    if resolved is None or resolved.type not in ("cpu", "cuda"):
        raise LokiError(f"unknown device {device!r}; choose one of: {DEVICES}")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise LokiError(f"device {device!r} asked for but CUDA is not available; use "
                            "--device cpu")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise LokiError(f"device {device!r}: this machine has {torch.cuda.device_count()} "
                            f"CUDA device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return resolved


def check_tokenizer(tokenizer, config: LokiConfig, hparams: dict, where: str) -> None:
    """Refuse a tokenizer whose ids the checkpoint was not trained on.

    The strongest check is the vocab hash recorded at training time (``hparams["vocab_hash"]``);
    without it, the tokenizer spec recorded in the checkpoint is loaded and its hash compared;
    failing both, ids beyond the embedding are the last line of defence.
    """
    recorded = hparams.get("vocab_hash")
    spec = hparams.get("tokenizer")
    if recorded is None and spec:
        from loki.tokenizer import LokiTokenizer

        try:
            recorded = LokiTokenizer.from_spec(spec).vocab_hash
        except LokiError:
            recorded = None  # the training-time tokenizer path is not on this machine
    if recorded is not None and recorded != tokenizer.vocab_hash:
        raise LokiError(
            f"tokenizer mismatch: {where} was trained with vocab_hash {recorded} "
            f"(tokenizer {spec!r}) but the given tokenizer has vocab_hash {tokenizer.vocab_hash}; "
            "pass the tokenizer the model was trained with")
    if tokenizer.vocab_size > config.vocab_size:
        raise LokiError(
            f"tokenizer mismatch: the tokenizer has {tokenizer.vocab_size} ids but {where} has "
            f"only {config.vocab_size} embedding rows; pass the tokenizer it was trained with")


def load_for_eval(
    checkpoint: str | Path, tokenizer: str | None = None, device: str | None = "cpu",
    dtype: str | torch.dtype | None = None,
) -> EvalModel:
    """Checkpoint + tokenizer (default: the spec recorded in the checkpoint), checked."""
    from loki.checkpoint_read import resolve_checkpoint
    from loki.module import load_model

    target, dt = resolve_device(device), resolve_dtype(dtype)  # refused before reading weights
    checkpoint = resolve_checkpoint(checkpoint)  # a run folder: its last checkpoint, recorded
    model, config, hparams = load_model(checkpoint)
    tok, spec = _tokenizer_for(checkpoint, tokenizer, config, hparams)
    model = model.to(device=target)
    if dt is not None:
        model = model.to(dtype=dt)
    return EvalModel(model.eval(), config, tok, str(checkpoint), str(spec))


def check_for_eval(checkpoint: str | Path, tokenizer: str | None = None) -> None:
    """What ``load_for_eval`` refuses, found without reading the weights: a file that is not a
    Loki checkpoint, a tokenizer that does not load or does not fit it. For tools that load
    several checkpoints one after another (``compare``) and must not find a bad one late."""
    from loki.checkpoint_read import inspect_checkpoint

    config, hparams = inspect_checkpoint(checkpoint)
    _tokenizer_for(checkpoint, tokenizer, config, hparams)


def _tokenizer_for(checkpoint: str | Path, tokenizer: str | None, config: LokiConfig,
                   hparams: dict) -> tuple[object, str]:
    from loki.tokenizer import LokiTokenizer

    spec = tokenizer or hparams.get("tokenizer")
    if not spec:
        raise LokiError(f"checkpoint {checkpoint} records no tokenizer; pass --tokenizer <spec>")
    tok = LokiTokenizer.from_spec(spec)
    check_tokenizer(tok, config, dict(hparams), f"checkpoint {checkpoint}")
    return tok, spec
