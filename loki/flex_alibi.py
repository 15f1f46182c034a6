"""FlexAttention with ALiBi: the ``flex`` and ``flex-flash`` backends of :mod:`loki.attention`.

ALiBi is a ``score_mod`` (``score - slope[h] * (q - kv)``, in fp32 inside the kernel) and the
causal mask a ``BlockMask``, built once per (length, device) and shared by every layer and head:
the model builds it once per forward (:func:`loki.attention.shared_block_mask`) and hands it to
each layer, so a compiled block takes it as an input instead of building its own.
``flex`` runs Inductor's Triton template; ``flex-flash`` asks for FlashAttention-4's CuTe-DSL
kernels (``kernel_options={"BACKEND": "FLASH"}``), which need ``flash_attn.cute`` and a Hopper or
newer GPU.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from typing import Any

import torch

# What flex-flash asks of the environment, named in its errors.
FLEX_FLASH_NEEDS = (
    "a CUDA GPU of compute capability >= 9.0 (Hopper, Blackwell) and the flash-attn-4 package: "
    "pip install --pre 'lokilm[flash4]' (or set attention_backend to flex)"
)


# The availability checks below run in every layer's call, also inside compiled blocks. Marked
# as constants to the compiler: Dynamo calls them once while tracing and keeps the answer,
# where tracing their import probes would split every block's graph at its attention (a failed
# import is a graph break). Their answers never change within a process, so they are cached.
_AVAILABLE: dict[tuple[str, str], bool] = {}


def cached_check(name: str, key: str, probe: Any) -> bool:
    if (name, key) not in _AVAILABLE:
        _AVAILABLE[name, key] = bool(probe())
    return _AVAILABLE[name, key]


def importable(module: str, load: bool = False) -> bool:
    """Whether ``module`` is installed; ``load``: and imports (a compiled extension built for
    another torch or CUDA fails only then)."""
    try:
        if load:
            importlib.import_module(module)
            return True
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a parent package missing, or the import itself failed
        return False


@torch.compiler.assume_constant_result
def flex_available() -> bool:
    """Whether this torch has FlexAttention."""
    return cached_check("flex", "", lambda: importable("torch.nn.attention.flex_attention",
                                                       load=True))


def _causal(b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
    return q_idx >= kv_idx


def _build_causal_mask(length: int, device: torch.device | str) -> Any:
    from torch.nn.attention.flex_attention import create_block_mask

    return create_block_mask(_causal, None, None, length, length, device=device)


@lru_cache(maxsize=16)
def _causal_block_mask(length: int, device: str) -> Any:
    """The causal ``BlockMask`` of one sequence length, built once per (length, device) and
    outside inference mode (see :func:`loki.attention.alibi_bias`); shared by every layer
    and head."""
    with torch.inference_mode(False), torch.no_grad():
        return _build_causal_mask(length, device)


def causal_block_mask(length: int, device: torch.device | str) -> Any:
    """The causal ``BlockMask`` of ``length`` queries and keys: from the (length, device) cache,
    or, while ``torch.compile`` traces, built in the graph (Dynamo would look through the cache
    and warn; in a whole-model graph this runs once per forward)."""
    if torch.compiler.is_compiling():
        return _build_causal_mask(length, device)
    return _causal_block_mask(length, str(torch.device(device)))


@lru_cache(maxsize=1)
def _compiled_flex() -> Any:
    """One compiled FlexAttention for every layer and length (the first call compiles; later
    lengths recompile once with dynamic shapes). Without compilation flex materializes the scores."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention)


def flex_alibi_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slopes: torch.Tensor, compiled: bool = True,
    kernel: str = "triton", block_mask: Any = None,
) -> torch.Tensor:
    """FlexAttention with ALiBi; q, k, v (B, nh, T, hs), ``slopes`` (nh,) on q's device.
    Queries and keys cover the same positions (training, validation, prefill). ``kernel``:
    "triton" (Inductor's own template) or "flash" (FlashAttention-4's CuTe kernels).
    ``block_mask``: the causal mask of this length (default :func:`causal_block_mask`)."""
    from torch.nn.attention.flex_attention import flex_attention

    q_len, k_len = q.size(-2), k.size(-2)
    if q_len != k_len:
        raise ValueError(f"flex_alibi_attention needs Tq == Tk, got {q_len} and {k_len}")
    if block_mask is None:
        block_mask = causal_block_mask(q_len, q.device)
    elif tuple(block_mask.seq_lengths) != (q_len, k_len):
        raise ValueError(f"block_mask covers {tuple(block_mask.seq_lengths)} positions, "
                         f"the attention {(q_len, k_len)}")

    def alibi(score: torch.Tensor, b: Any, h: Any, q_idx: Any, kv_idx: Any) -> torch.Tensor:
        return score - slopes[h] * (q_idx - kv_idx)  # fp32 score, fp32 slope

    options = {"BACKEND": "FLASH"} if kernel == "flash" else None
    # Traced into a compiled block or model, flex is the graph's own operator; run eagerly, it
    # goes through one compiled flex (without compilation flex materializes the scores).
    fn = flex_attention if torch.compiler.is_compiling() or not compiled else _compiled_flex()
    return fn(q, k, v, score_mod=alibi, block_mask=block_mask, kernel_options=options)


@torch.compiler.assume_constant_result
def flex_flash_available(device: torch.device | None = None) -> bool:
    """Whether ``flex-flash`` can run: FlashAttention-4's ``flash_attn.cute`` importable and a
    CUDA device of compute capability 9.0 or newer (``device``, default the current one)."""

    def probe() -> bool:
        return (flex_available() and importable("flash_attn.cute")
                and torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 9)

    return cached_check("flex-flash", str(device), probe)
