"""What this machine's CPU multiplies fast (the CPU demo's choice of precision), and one call
that makes torch's CPU exp, log, sqrt and tanh give the same bits in every process."""

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


@cache
def warm_up_vector_math() -> None:
    """Call torch's vectorized CPU exp, log, sqrt, tanh, ... once, on one element, on one thread.

    torch's CPU build computes these functions of float tensors with MKL's vector math library.
    In a process whose first such call runs on two threads, that call can return values tens of
    ULPs away from every later call: with torch 2.13 on 2 cores, a first ``log`` of 32 x 512
    values differed from the second in 5 of 16 fresh processes, and ``logsumexp`` in 2 of 16 (less
    often on a busy machine; never with one thread, never on a later call). In training that is
    the first step after every start or resume, so a resumed run drifted from an uninterrupted
    one by ~1e-6 (the kill test of tests/test_checkpoint_io.py found it). A first call on a
    single element runs on one thread and settles it for the whole process, in microseconds.
    ``LokiLM`` and ``load_model`` call this before any model code runs.
    """
    import torch

    for dtype in (torch.float32, torch.float64):
        one = torch.ones(1, dtype=dtype)
        for fn in (torch.exp, torch.expm1, torch.log, torch.log1p, torch.log2, torch.log10,
                   torch.sqrt, torch.rsqrt, torch.tanh, torch.sigmoid, torch.erf, torch.erfc,
                   torch.sin, torch.cos, torch.tan):
            fn(one)
