"""ALiBi causal attention alone, forward + backward, on one GPU: each backend's time and TFLOP/s.

    python benchmarks/gpu_attention.py             # B8 H32 T2048 D64 bf16: one layer of the 1.4B step
    python benchmarks/gpu_attention.py --dry-run   # a tiny shape on the CPU: checks the code paths

Rows (``loki.attention`` backends, the call a Loki layer makes):

- ``sdpa``        SDPA with the float ALiBi bias (CUDA's memory-efficient kernel)
- ``flex``        compiled FlexAttention, Inductor's Triton template
- ``flex-flash``  the same call on FlashAttention-4's CuTe kernels (needs flash-attn-4, Hopper+)
- ``flash``       flash-attn 2 with ALiBi slopes (when importable)
- ``sdpa-causal`` SDPA's flash kernel with a plain causal mask and **no ALiBi**: not a Loki
  backend (it computes another function), the speed a causal kernel reaches on this GPU

FLOPs follow ``loki.flops``: each allowed (query, key) pair once, 4 D forward and twice that
backward. ``first s`` is the first call (compilation). ``max err`` is the forward output's largest
absolute difference from the fp32 eager reference, over the first sequence of the batch.
A row that cannot run prints "skipped: <why>" and the others go on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loki.attention import causal_attention, flash_available, slope_key  # noqa: E402
from loki.flex_alibi import FLEX_FLASH_NEEDS, flex_flash_available  # noqa: E402
from loki.model import alibi_slopes  # noqa: E402

ROWS = ("sdpa", "sdpa-causal", "flex", "flex-flash", "flash")  # quick rows first


def attention_flops(batch: int, heads: int, seq: int, head_dim: int) -> int:
    """Forward + backward FLOPs of causal attention: T (T + 1) / 2 pairs per head and sequence,
    4 D each forward, 8 D backward."""
    return 12 * head_dim * batch * heads * seq * (seq + 1) // 2


def why_not(row: str, device: torch.device) -> str | None:
    """The reason ``row`` cannot run here, or None."""
    cuda = device.type == "cuda"
    if row in ("flex", "sdpa-causal") and not cuda:
        return "needs a CUDA device (the CPU has no FlexAttention backward)" if row == "flex" \
            else "compares CUDA kernels only"
    if row == "flex-flash" and not (cuda and flex_flash_available(device)):
        return f"needs {FLEX_FLASH_NEEDS}"
    if row == "flash" and not (cuda and flash_available()):
        return "flash-attn is not importable (or no CUDA device)"
    return None


def attention_fn(row: str, slopes: torch.Tensor, key: tuple[float, ...]) -> Callable:
    if row == "sdpa-causal":
        return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return lambda q, k, v: causal_attention(q, k, v, slopes, row, key=key)


def time_row(fn: Callable, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, warmup: int,
             iters: int) -> tuple[float, float, torch.Tensor]:
    """(median seconds of forward + backward, first call's seconds, the forward output)."""
    grad = torch.randn_like(q)
    cuda = q.device.type == "cuda"
    times = []
    for _ in range(warmup + iters):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn(q, k, v)
        out.backward(grad)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        q.grad = k.grad = v.grad = None
    timed = sorted(times[warmup:])
    return timed[len(timed) // 2], times[0], out.detach()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--head-dim", dest="head_dim", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--only", default=None, help="comma-separated rows, in that order")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--dry-run", dest="dry_run", action="store_true",
                        help="tiny shape, CPU, fp32, 1 timed call: checks the code paths only")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.batch, args.heads, args.seq, args.head_dim, args.warmup, args.iters = 1, 2, 64, 16, 0, 1
        device, dtype = torch.device("cpu"), torch.float32
    elif not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU, or pass --dry-run to check the code paths")
    else:
        device, dtype = torch.device("cuda"), torch.bfloat16
    B, H, T, D = args.batch, args.heads, args.seq, args.head_dim
    flops = attention_flops(B, H, T, D)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"ALiBi causal attention fwd+bwd, B{B} H{H} T{T} D{D} {str(dtype)[6:]}, {name}, "
          f"torch {torch.__version__}: {flops / 1e9:.1f} GFLOP per call")
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, H, T, D, device=device, dtype=dtype, requires_grad=True)
               for _ in range(3))
    cpu_slopes = alibi_slopes(H)
    slopes, key = cpu_slopes.to(device), slope_key(cpu_slopes)
    with torch.no_grad():  # the reference: fp32 eager over the first sequence
        first = [t[:1].detach().float() for t in (q, k, v)]
        reference = causal_attention(*first, slopes, "eager", key=key)
    print(f"{'row':12} {'ms':>8} {'TFLOP/s':>8} {'vs flex':>8} {'first s':>8} {'max err':>8}")
    rows: list[dict] = []
    for row in args.only.split(",") if args.only else ROWS:
        result: dict = {"row": row}
        reason = why_not(row, device)
        try:
            if reason:
                raise RuntimeError(reason)
            seconds, first_s, out = time_row(attention_fn(row, slopes, key), q, k, v,
                                             args.warmup, args.iters)
            err = None if row == "sdpa-causal" else \
                (out[:1].float() - reference).abs().max().item()
            result.update(ms=seconds * 1e3, tflops=flops / seconds / 1e12, first_s=first_s,
                          max_err=err)
            flex = next((r["ms"] for r in rows if r["row"] == "flex" and "ms" in r), None)
            speedup = f"{flex / result['ms']:.2f}x" if flex else "-"
            error_text = "-" if err is None else f"{err:.4f}"
            print(f"{row:12} {result['ms']:8.2f} {result['tflops']:8.1f} {speedup:>8} "
                  f"{first_s:8.1f} {error_text:>8}", flush=True)
        except Exception as error:  # noqa: BLE001 - one failing row must not cost the others
            result["skipped"] = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:150]}"
            print(f"{row:12} skipped: {result['skipped']}", flush=True)
        rows.append(result)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
