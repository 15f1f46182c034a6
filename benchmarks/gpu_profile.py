"""Where one raw-loop training step's GPU time goes: kernel time by kind, and the top kernels.

    python benchmarks/gpu_profile.py                              # loki-compiled(blocks,...)
    python benchmarks/gpu_profile.py --variant loki-fp8-tensorwise --trace step.json
    python benchmarks/gpu_profile.py --dry-run                    # tiny config on the CPU

Builds one ``benchmarks/gpu_step.py`` variant, runs ``--warmup`` steps (compilation included),
then profiles ``--steps`` steps with ``torch.profiler`` and prints, per step:

- the GPU time in kernels, against the step's wall time (the gap is time the GPU sat idle);
- that time by kind, from the kernel names: matmuls (cuBLAS / CUTLASS / Triton templates),
  attention (FlexAttention's kernels), fused Triton kernels from the compiler (norms, SwiGLU,
  residuals, loss), the optimizer, copies and the rest of eager PyTorch;
- the ``--top`` kernels by time, so that the grouping can be checked by eye.

The kinds go by kernel name and are a guide, not a measurement of their own: the top list is
the evidence. On the CPU (``--dry-run``) it groups CPU operator time instead.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.autograd import DeviceType

sys.path.insert(0, str(Path(__file__).resolve().parent))  # gpu_step, beside this file
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpu_step import raw_loop_inputs, setup_run, train_step, variants  # noqa: E402

from loki.errors import LokiError  # noqa: E402

# (kind, substrings of a kernel's name), first match wins; everything else is "other". Without
# max-autotune the compiler's only template kernels ("triton_tem") here are FlexAttention's.
KINDS: list[tuple[str, tuple[str, ...]]] = [
    ("attention", ("flex_attention", "triton_tem", "fmha", "flash", "attention")),
    ("matmul", ("gemm", "nvjet", "cutlass", "xmma", "cublas", "scaled_mm", "::mm", "addmm",
                "bmm", "matmul")),
    ("optimizer", ("adam", "multi_tensor", "foreach")),
    ("copies", ("memcpy", "memset", "copy_kernel", "catarraybatched")),
    ("fused (compiler)", ("triton_",)),
    ("eager elementwise", ("elementwise", "vectorized", "reduce_kernel", "softmax", "index",
                           "scatter", "gather", "norm")),
]


def kind_of(name: str) -> str:
    low = name.lower()
    return next((kind for kind, keys in KINDS if any(k in low for k in keys)), "other")


def summarize(prof: torch.profiler.profile, steps: int, device: torch.device,
              ) -> tuple[float, dict[str, float], list[tuple[str, float, int]]]:
    """(kernel time per step in seconds, time per kind, top kernels (name, seconds, calls))
    from a finished profile; CPU operator self time on the CPU."""
    on_gpu = device.type == "cuda"
    rows = []
    for event in prof.key_averages():
        if on_gpu and event.device_type == DeviceType.CUDA:
            rows.append((event.key, event.self_device_time_total / 1e6 / steps, event.count))
        elif not on_gpu and event.device_type == DeviceType.CPU and event.self_cpu_time_total:
            rows.append((event.key, event.self_cpu_time_total / 1e6 / steps, event.count))
    by_kind: dict[str, float] = defaultdict(float)
    for name, seconds, _ in rows:
        by_kind[kind_of(name)] += seconds
    rows.sort(key=lambda r: -r[1])
    return sum(r[1] for r in rows), dict(by_kind), rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="loki-1.4b")
    parser.add_argument("--variant", default="loki-compiled(blocks",
                        help="a gpu_step.py variant (a name, else the first it begins)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--trace", default=None, help="also write a Chrome trace here")
    parser.add_argument("--activation_checkpointing", action="store_true")
    parser.add_argument("--dry-run", dest="dry_run", action="store_true",
                        help="tiny config, CPU, fp32: checks the code path only")
    args = parser.parse_args(argv)
    device, dtype = setup_run(args)
    seq = args.seq or args.model_config.block_size
    table = variants(args, device)
    found = [item for item in table if item[0] == args.variant] or \
        [item for item in table if item[0].startswith(args.variant)]
    if not found:
        raise SystemExit(f"--variant {args.variant!r} is none of: "
                         f"{', '.join(label for label, _ in table)}")
    label, build = found[0]
    try:
        model, kind = build()
    except LokiError as err:
        raise SystemExit(f"{label}: {err}") from None
    model.train()
    opt, idx = raw_loop_inputs(model, args.batch, seq, args.model_config.vocab_size, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    for _ in range(args.warmup):
        train_step(model, kind, opt, idx, dtype)
    sync()
    print(f"{label}: {args.config}, batch {args.batch} x {seq}; warm-up "
          f"{time.perf_counter() - t0:.1f} s ({args.warmup} steps, compilation included)")
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for _ in range(args.steps):
            train_step(model, kind, opt, idx, dtype)
        sync()
        wall = (time.perf_counter() - t0) / args.steps
    if args.trace:
        prof.export_chrome_trace(args.trace)
    busy, by_kind, rows = summarize(prof, args.steps, device)
    what = "kernels" if device.type == "cuda" else "CPU operators (self time)"
    print(f"per step: wall {wall * 1e3:.1f} ms (profiled), {what} {busy * 1e3:.1f} ms")
    for name, seconds in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"  {name:20} {seconds * 1e3:9.1f} ms  {100 * seconds / busy:5.1f}%")
    print(f"top {args.top}:")
    for name, seconds, calls in rows[: args.top]:
        print(f"  {seconds * 1e3:9.2f} ms  {calls // args.steps:5d}x  {kind_of(name):18}  "
              f"{name[:90]}")


if __name__ == "__main__":
    main()
