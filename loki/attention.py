"""Causal attention with ALiBi, three ways.

- ``flash``: flash-attn 2's ``flash_attn_func(..., causal=True, alibi_slopes=...)`` (CUDA, fp16/bf16).
- ``sdpa``:  ``F.scaled_dot_product_attention`` with a float ALiBi bias that also carries the causal
  mask. On CPU this costs no more than ``is_causal=True`` (measured 0.81x fwd+bwd at B8 H8 T512
  D64), so it is the fallback everywhere flash-attn is missing.
- ``eager``: the reference written out with matmul and softmax; the other two are tested against it.

``auto`` picks flash when it can run, sdpa otherwise.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

_FLASH_DTYPES = (torch.float16, torch.bfloat16)


def alibi_slopes(n_head: int) -> torch.Tensor:
    """Per-head ALiBi slopes (Press et al. 2022), float32 of shape (n_head,).

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
    # always on the CPU (also under a meta or CUDA default device): the bias cache keys on the
    # values, and reading them from a CUDA tensor would synchronize every layer of every step
    return torch.tensor(slopes, dtype=torch.float32, device="cpu")


def alibi_bias(
    slopes: torch.Tensor, q_len: int, k_len: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """Additive bias (n_head, q_len, k_len): ``-slope * distance`` on and below the diagonal,
    ``-inf`` above it. Queries are the last ``q_len`` of the ``k_len`` positions (KV cache)."""
    return _alibi_bias_cached(tuple(slopes.tolist()), q_len, k_len, dtype, str(device))


@lru_cache(maxsize=8)
def _alibi_bias_cached(
    slopes: tuple[float, ...], q_len: int, k_len: int, dtype: torch.dtype, device: str
) -> torch.Tensor:
    q_pos = torch.arange(k_len - q_len, k_len, device=device)
    k_pos = torch.arange(k_len, device=device)
    distance = (q_pos[:, None] - k_pos[None, :]).float()  # (Tq, Tk), negative above the diagonal
    s = torch.tensor(slopes, device=device)[:, None, None]
    bias = -s * distance  # (H, Tq, Tk)
    bias = bias.masked_fill(distance < 0, float("-inf"))
    return bias.to(dtype)


def flash_available() -> bool:
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def resolve_backend(backend: str, q: torch.Tensor) -> str:
    if backend == "auto":
        return "flash" if q.is_cuda and q.dtype in _FLASH_DTYPES and flash_available() else "sdpa"
    if backend == "flash" and not (q.is_cuda and flash_available()):
        raise RuntimeError(
            "attention_backend='flash' needs flash-attn and a CUDA device; install flash-attn "
            "(see the 'gpu' extra) or set attention_backend to 'auto' or 'sdpa'"
        )
    return backend


def causal_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    slopes: torch.Tensor,
    backend: str = "auto",
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """ALiBi causal attention. q (B, nh, Tq, hs), k and v (B, nh, Tk, hs) with Tq <= Tk; the
    queries are the last Tq positions. Returns (B, nh, Tq, hs)."""
    backend = resolve_backend(backend, q)
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
            alibi_slopes=slopes.to(device=q.device, dtype=torch.float32),
        )
        return y.transpose(1, 2)
    bias = alibi_bias(slopes, q_len, k_len, q.dtype, q.device)  # (nh, Tq, Tk)
    if backend == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p)
    if backend == "eager":
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.size(-1)))  # (B, nh, Tq, Tk)
        probs = torch.softmax(scores.float() + bias.float(), dim=-1).to(q.dtype)
        probs = F.dropout(probs, p=dropout_p, training=dropout_p > 0)
        return probs @ v
    raise ValueError(f"unknown attention backend {backend!r}")
