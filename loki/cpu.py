"""What this machine's CPU multiplies fast, for the CPU demo's choice of precision."""

from __future__ import annotations

from functools import cache


@cache
def native_bf16() -> bool:
    """True where the CPU has bf16 matrix instructions (AMX-BF16 or AVX512-BF16).

    There oneDNN runs bf16 matmuls faster than fp32: on a 2-core Sapphire Rapids the demo
    student's training micro-batch (bf16 autocast) takes 0.39 s against 0.58 s in fp32, and
    SmolLM2-135M samples 32 x 56 tokens in 10.9 s against 15.6 s. Elsewhere bf16 is emulated in
    fp32 arithmetic and is slower than fp32, so the demo stays in fp32 there.
    """
    import torch

    get = getattr(torch.cpu, "get_capabilities", None)
    caps = get() if get else {}
    return bool(caps.get("amx_bf16") or caps.get("avx512_bf16"))


def resolve_bf16(choice: bool | str) -> bool:
    """``auto`` -> :func:`native_bf16`; a bool is kept."""
    if choice == "auto":
        return native_bf16()
    if isinstance(choice, bool):
        return choice
    raise ValueError(f"bf16 must be true, false or auto, not {choice!r}")
