"""Causal attention with ALiBi, four ways.

- ``flash``: flash-attn 2's ``flash_attn_func(..., causal=True, alibi_slopes=...)`` (CUDA, fp16/bf16).
- ``flex``:  ``torch.nn.attention.flex_attention``, compiled, with ALiBi as a ``score_mod`` and a
  causal ``BlockMask`` (fully masked tiles are skipped). On an H200 it ran ALiBi attention fwd+bwd
  at 204 TFLOP/s against 45 for SDPA with a float bias (B4 H32 T2048 D64 bf16). Scores are
  computed in fp32 inside the kernel, so the bias carries no bf16 rounding.
- ``flex-flash``: the same FlexAttention call (same score_mod and mask) with
  ``kernel_options={"BACKEND": "FLASH"}``: Inductor generates FlashAttention-4's CuTe-DSL kernels
  (Hopper and Blackwell) instead of its Triton template. It needs the ``flash-attn-4`` package
  (``flash_attn.cute``, the ``flash4`` extra) and a GPU of compute capability 9.0 or newer.
  torch calls that backend experimental; it is opt-in until a GPU run shows it faster
  (``benchmarks/gpu_attention.py``, and the ``*flex-flash*`` rows of ``benchmarks/gpu_step.py``).
- ``sdpa``:  ``F.scaled_dot_product_attention`` with a float ALiBi bias that also carries the causal
  mask. The bias is handed over as (1, nh, Tq, Tk): with that shape the CPU picks its fused flash
  kernel (a 3-D mask sends it to the unfused math path); CUDA runs the memory-efficient kernel.
- ``eager``: the reference written out with matmul and softmax; the others are tested against it.

``auto`` picks flash when flash-attn is importable on CUDA, else flex on CUDA, else sdpa.

``flex`` and ``flex-flash`` fall back to ``sdpa`` (the result is the same function) where they
cannot serve: decoding with a KV cache (Tq < Tk: each new cache length would need a new block
mask and a recompiled kernel, and a one-row query gains nothing from tiling), dropout
(FlexAttention has none) and, for ``flex``, the CPU under autograd (torch has no FlexAttention
backward on the CPU). ``flex-flash`` where its kernels cannot run (no flash-attn-4, a GPU older
than Hopper, the CPU) is an error that names what to install or choose instead.

Precision of the ``sdpa`` bias: it is built in fp32 and cast to the query's dtype, which SDPA
requires. In bf16, ``-slope * distance`` keeps 8 significant bits: where the bias is within 20
of the diagonal's (the keys that carry weight) it is off by up to 0.06 before the softmax. At
B1 H32 T512 D64 the bf16 output is 0.016 (max abs) from the fp32 reference, as close as bf16
attention with an fp32 bias (0.017): bf16 attention's own rounding dominates
(tests/test_attention.py holds it to 0.03). ``flex`` and ``flash`` apply the bias in fp32.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from loki.config import ATTENTION_BACKENDS
from loki.flex_alibi import (
    FLEX_FLASH_NEEDS,
    _causal_block_mask,
    cached_check,
    causal_block_mask,
    flex_alibi_attention,
    flex_available,
    flex_flash_available,
    importable,
)

log = logging.getLogger(__name__)
_FLASH_DTYPES = (torch.float16, torch.bfloat16)
# The cached SDPA biases: each is nh * Tq * Tk elements (268 MB at 32 heads, T 2048, bf16), so
# the cache is bounded in bytes as well as in entries (decoding makes one small bias per length).
BIAS_CACHE_BYTES = 1 << 30
BIAS_CACHE_ENTRIES = 16


def alibi_slopes(n_head: int) -> torch.Tensor:
    """Per-head ALiBi slopes (Press et al. 2022), float32 of shape (n_head,), on the CPU.

    For a power of two ``n`` the slopes are the geometric sequence starting at and stepping by
    ``2^(-8/n)``. Otherwise the paper takes the slopes of the closest smaller power of two ``m``
    and fills the remaining ``n - m`` heads with every other slope of the ``2m`` sequence.
    """
    if n_head <= 0:
        raise ValueError(f"n_head must be positive, got {n_head}")

    def geometric(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    m = 2 ** math.floor(math.log2(n_head))
    slopes = geometric(m)
    if m < n_head:
        slopes += geometric(2 * m)[0::2][: n_head - m]
    # on the CPU even under a meta or CUDA default device: callers take their cache key from it
    return torch.tensor(slopes, dtype=torch.float32, device="cpu")


def slope_key(slopes: torch.Tensor | Sequence[float]) -> tuple[float, ...]:
    """The slopes as a hashable tuple. Reading a CUDA tensor here synchronizes, so the model
    computes the key once from its CPU slopes and passes it on every call."""
    if torch.is_tensor(slopes):
        if slopes.device.type != "cpu":
            raise ValueError("slope_key needs the CPU slopes (reading a GPU tensor would sync)")
        return tuple(slopes.tolist())
    return tuple(float(s) for s in slopes)


def alibi_bias(
    slopes: torch.Tensor | Sequence[float], q_len: int, k_len: int, dtype: torch.dtype,
    device: torch.device | str,
) -> torch.Tensor:
    """Additive bias (n_head, q_len, k_len): ``-slope * distance`` on and below the diagonal,
    ``-inf`` above it. Queries are the last ``q_len`` of the ``k_len`` positions (KV cache).

    Cached per (slopes, lengths, dtype, device) within ``BIAS_CACHE_BYTES``. The bias is made
    outside inference mode even when asked for inside it (Lightning's sanity check runs
    validation under ``torch.inference_mode``), so a cached bias can serve training later.

    Traced by ``torch.compile`` (a compiled block or model), the bias is built in the graph
    instead, where it is one pointwise kernel: the cache's lock would break each block's graph
    into several. Built inside ``checkpoint``, it is recomputed for backward rather than kept, so
    the layers do not each hold their own copy until backward (268 MB each at 32 heads,
    T 2048, bf16), as they would otherwise."""
    if torch.compiler.is_compiling():
        return checkpoint(_build_bias, slope_key(slopes), q_len, k_len, dtype, device,
                          use_reentrant=False)
    key = (slope_key(slopes), q_len, k_len, dtype, str(torch.device(device)))
    with _BIAS_LOCK:
        bias = _BIAS_CACHE.get(key)
        if bias is not None:
            _BIAS_CACHE.move_to_end(key)
            return bias
    with torch.inference_mode(False), torch.no_grad():
        bias = _build_bias(key[0], q_len, k_len, dtype, device)
    size = bias.numel() * bias.element_size()
    if size <= BIAS_CACHE_BYTES:
        with _BIAS_LOCK:
            _BIAS_CACHE[key] = bias
            while len(_BIAS_CACHE) > BIAS_CACHE_ENTRIES or _cached_bytes() > BIAS_CACHE_BYTES:
                _BIAS_CACHE.popitem(last=False)
    return bias


def _build_bias(
    slopes: tuple[float, ...], q_len: int, k_len: int, dtype: torch.dtype,
    device: torch.device | str,
) -> torch.Tensor:
    q_pos = torch.arange(k_len - q_len, k_len, device=device)
    k_pos = torch.arange(k_len, device=device)
    distance = (q_pos[:, None] - k_pos[None, :]).float()  # (Tq, Tk), negative above diagonal
    s = torch.tensor(slopes, dtype=torch.float32, device=device)[:, None, None]
    return (-s * distance).masked_fill(distance < 0, float("-inf")).to(dtype)  # (H, Tq, Tk)


_BIAS_CACHE: OrderedDict[tuple, torch.Tensor] = OrderedDict()
_BIAS_LOCK = threading.Lock()


def _cached_bytes() -> int:
    return sum(b.numel() * b.element_size() for b in _BIAS_CACHE.values())


def clear_caches() -> None:
    """Drop the cached SDPA biases and FlexAttention block masks (e.g. to free GPU memory)."""
    with _BIAS_LOCK:
        _BIAS_CACHE.clear()
    _causal_block_mask.cache_clear()


# ----------------------------------------------------------------- choosing a backend
@torch.compiler.assume_constant_result
def flash_available() -> bool:
    """Whether flash-attn is importable and CUDA is there (a constant to the compiler, cached:
    see ``loki.flex_alibi``)."""
    return cached_check("flash", "", lambda: importable("flash_attn", load=True)
                   and torch.cuda.is_available())


_warned: set[tuple[str, str]] = set()


def _fall_back(backend: str, reason: str) -> str:
    """``sdpa``, noted once per reason. Not while ``torch.compile`` traces: a log call there
    would split the graph, and every reason is one the module docstring lists."""
    if not torch.compiler.is_compiling() and (backend, reason) not in _warned:
        _warned.add((backend, reason))
        log.info("attention_backend %s -> sdpa: %s", backend, reason)
    return "sdpa"


def resolve_backend(backend: str, q: torch.Tensor, k: torch.Tensor | None = None,
                    dropout_p: float = 0.0) -> str:
    """The backend that runs this call (see the module docstring for the choices)."""
    if backend == "auto":
        if q.is_cuda and q.dtype in _FLASH_DTYPES and flash_available():
            return "flash"
        backend = "flex" if q.is_cuda and flex_available() else "sdpa"
    if backend == "flash" and not (q.is_cuda and flash_available()):
        raise RuntimeError(
            "attention_backend='flash' needs flash-attn and a CUDA device; install flash-attn "
            "(see the 'gpu' extra) or set attention_backend to 'auto', 'flex' or 'sdpa'"
        )
    if backend in ("flex", "flex-flash"):
        if not flex_available():
            raise RuntimeError(f"attention_backend={backend!r} needs torch >= 2.5 (FlexAttention)")
        if k is not None and k.size(-2) != q.size(-2):
            return _fall_back(backend, "KV-cache decoding (queries shorter than keys)")
        if dropout_p > 0:
            return _fall_back(backend, "FlexAttention has no dropout")
        if backend == "flex-flash" and not (q.is_cuda and flex_flash_available(q.device)):
            raise RuntimeError(f"attention_backend='flex-flash' needs {FLEX_FLASH_NEEDS}")
        if not q.is_cuda and torch.is_grad_enabled() and q.requires_grad:
            return _fall_back(backend, "torch has no FlexAttention backward on the CPU")
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}")
    return backend


def shared_block_mask(backend: str, x: torch.Tensor, length: int,
                      dropout_p: float = 0.0) -> Any | None:
    """The causal ``BlockMask`` that every layer's FlexAttention call of one forward shares, or
    None where the layers will not run flex. ``x`` (the layers' input) stands for the queries:
    their device and autograd state decide the backend as they will for each layer. Built once
    per (length, device) and cached; in a whole-model graph, once per forward. Without it each
    compiled block would build its own mask in its graph: a dozen small kernels per layer."""
    if resolve_backend(backend, x, dropout_p=dropout_p) not in ("flex", "flex-flash"):
        return None
    return causal_block_mask(length, x.device)


def causal_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    slopes: torch.Tensor,
    backend: str = "auto",
    dropout_p: float = 0.0,
    key: tuple[float, ...] | None = None,
    block_mask: Any | None = None,
) -> torch.Tensor:
    """ALiBi causal attention. q (B, nh, Tq, hs), k and v (B, nh, Tk, hs) with Tq <= Tk; the
    queries are the last Tq positions. Returns (B, nh, Tq, hs).

    ``slopes`` (nh,) fp32 lives on q's device (flash and flex read it there); ``key`` is the
    same slopes as a tuple for the bias cache (default: read from ``slopes``, which must then
    be on the CPU). Neither path copies anything between host and device per call.
    ``block_mask``: flex's causal mask, shared across layers (:func:`shared_block_mask`);
    other backends ignore it."""
    backend = resolve_backend(backend, q, k, dropout_p)
    q_len, k_len = q.size(-2), k.size(-2)
    if backend == "flash":
        from flash_attn import flash_attn_func

        # flash-attn wants (B, T, nh, hs); with Tq < Tk its causal mask is aligned bottom-right,
        # which is what a KV cache needs.
        y = flash_attn_func(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            dropout_p=dropout_p,
            causal=True,
            alibi_slopes=slopes.float(),
        )
        return y.transpose(1, 2)
    if backend in ("flex", "flex-flash"):
        kernel = "flash" if backend == "flex-flash" else "triton"
        return flex_alibi_attention(q, k, v, slopes.float(), kernel=kernel, block_mask=block_mask)
    if backend == "sdpa":
        bias = alibi_bias(key if key is not None else slopes, q_len, k_len, q.dtype, q.device)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias[None], dropout_p=dropout_p)
    bias = alibi_bias(key if key is not None else slopes, q_len, k_len, torch.float32, q.device)
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.size(-1)))  # (B, nh, Tq, Tk)
    probs = torch.softmax(scores.float() + bias, dim=-1).to(q.dtype)
    probs = F.dropout(probs, p=dropout_p, training=dropout_p > 0)
    return probs @ v
