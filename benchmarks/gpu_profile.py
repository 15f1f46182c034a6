"""Where one training step's GPU time goes: kernel time by kind and by phase, and the top kernels.

    python benchmarks/gpu_profile.py                              # loki-compiled(blocks,...)
    python benchmarks/gpu_profile.py --variant loki-fp8-tensorwise --trace step.json
    python benchmarks/gpu_profile.py --variant fit                # the Lightning path
    python benchmarks/gpu_profile.py --dry-run                    # tiny config on the CPU

Builds one ``benchmarks/gpu_step.py`` variant, runs ``--warmup`` steps (compilation included),
then profiles ``--steps`` steps with ``torch.profiler``. A ``fit`` row of ``gpu_step.py``
(``benchmarks/gpu_fit.py``) is profiled over the timed optimizer steps of its ``Trainer.fit``,
``FIT_ACCUM`` micro-batches each. It prints, per micro-batch:

- the GPU time in kernels, against the wall time (the gap is time the GPU sat idle: on the
  ``fit`` path, the host work of Lightning, the callbacks and the data);
- that time by kind, from the kernel names: matmuls (cuBLAS / CUTLASS / Triton templates),
  attention (FlexAttention's kernels), fused Triton kernels from the compiler (norms, SwiGLU,
  residuals, loss), the optimizer, collectives, copies and the rest of eager PyTorch;
- that time by phase, from the profiler range each kernel was launched under: the optimizer
  step, FSDP's gathers and reductions, the backward pass, and the rest (the forward pass);
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

from gpu_fit import FIT_ACCUM, FITS, run_fit  # noqa: E402
from gpu_step import raw_loop_inputs, setup_run, train_step, variants  # noqa: E402

from loki.errors import LokiError  # noqa: E402

# (kind, substrings of a kernel's name), first match wins; everything else is "other". Without
# max-autotune the compiler's only template kernels ("triton_tem") here are FlexAttention's.
KINDS: list[tuple[str, tuple[str, ...]]] = [
    ("attention", ("flex_attention", "triton_tem", "fmha", "flash", "attention")),
    ("matmul", ("gemm", "nvjet", "cutlass", "xmma", "cublas", "scaled_mm", "::mm", "addmm",
                "bmm", "matmul")),
    ("optimizer", ("adam", "multi_tensor", "foreach")),
    ("collectives", ("nccl",)),
    ("copies", ("memcpy", "memset", "copy_kernel", "catarraybatched")),
    ("fused (compiler)", ("triton_",)),
    ("eager elementwise", ("elementwise", "vectorized", "reduce_kernel", "softmax", "index",
                           "scatter", "gather", "norm")),
]


# (phase, prefix of a profiler range): a kernel belongs to the innermost such range it was
# launched under (FSDP's post-backward reduction runs inside the backward pass: FSDP wins)
PHASES: list[tuple[str, str]] = [
    ("optimizer", "Optimizer.step#"),
    ("optimizer", "Optimizer.zero_grad#"),
    ("FSDP", "FSDP::"),
    ("backward", "autograd::engine::evaluate_function"),
]
REST = "forward and the rest"


def phase_of(event: object) -> str:
    """The phase of a profiler event: its innermost range named in ``PHASES``."""
    while event is not None:
        name = getattr(event, "name", "")
        for phase, prefix in PHASES:
            if name.startswith(prefix):
                return phase
        event = getattr(event, "cpu_parent", None)
    return REST


def by_phase(prof: torch.profiler.profile, units: int, device: torch.device,
             ) -> dict[str, float]:
    """Seconds per unit (step or micro-batch) by phase: each CPU operator's launched kernel time
    on a GPU, its own CPU time on the CPU."""
    on_gpu = device.type == "cuda"
    phases: dict[str, float] = defaultdict(float)
    for event in prof.events():
        if event.device_type != DeviceType.CPU:
            continue
        us = (sum(k.duration for k in event.kernels) if on_gpu else event.self_cpu_time_total)
        if us:
            phases[phase_of(event)] += us / 1e6 / units
    return dict(phases)


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


def report(prof: torch.profiler.profile, units: int, wall: float, device: torch.device,
           top: int, unit: str = "step") -> None:
    """Print the breakdown of the module docstring, per ``unit`` (``units`` of them profiled,
    ``wall`` seconds each)."""
    busy, by_kind, rows = summarize(prof, units, device)
    what = "kernels" if device.type == "cuda" else "CPU operators (self time)"
    print(f"per {unit}: wall {wall * 1e3:.1f} ms (profiled), {what} {busy * 1e3:.1f} ms")
    for name, seconds in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"  {name:20} {seconds * 1e3:9.1f} ms  {100 * seconds / busy:5.1f}%")
    print("by phase:")
    phases = by_phase(prof, units, device)
    unlinked = busy - sum(phases.values())
    if unlinked > 0.01 * busy:  # kernels the profiler tied to no operator
        phases["(no operator)"] = unlinked
    for name, seconds in sorted(phases.items(), key=lambda kv: -kv[1]):
        print(f"  {name:20} {seconds * 1e3:9.1f} ms  {100 * seconds / busy:5.1f}%")
    print(f"top {top}:")
    for name, seconds, calls in rows[:top]:
        print(f"  {seconds * 1e3:9.2f} ms  {calls // units:5d}x  {kind_of(name):18}  "
              f"{name[:90]}")


def profile_fit(args: argparse.Namespace, device: torch.device, seq: int, label: str) -> None:
    """Profile a ``fit`` row of ``gpu_step.py`` over its timed optimizer steps."""
    t0 = time.perf_counter()
    result = run_fit(args, device, seq, profile=True, **FITS[label])
    units = result["micro_batches"]
    print(f"{label}: {args.config}, micro-batch {args.batch} x {seq}, {FIT_ACCUM} per optimizer "
          f"step; {units} micro-batches profiled after {args.warmup} warm-up steps "
          f"({time.perf_counter() - t0:.1f} s in all)")
    if args.trace:
        result["profile"].export_chrome_trace(args.trace)
    report(result["profile"], units, result["seconds"], device, args.top, "micro-batch")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="loki-1.4b")
    parser.add_argument("--variant", default="loki-compiled(blocks",
                        help="a gpu_step.py variant or fit row (a name, else the first it begins)")
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
    table = [*variants(args, device), *((label, None) for label in FITS)]
    found = [item for item in table if item[0] == args.variant] or \
        [item for item in table if item[0].startswith(args.variant)]
    if not found:
        raise SystemExit(f"--variant {args.variant!r} is none of: "
                         f"{', '.join(label for label, _ in table)}")
    label, build = found[0]
    if build is None:
        try:
            return profile_fit(args, device, seq, label)
        except LokiError as err:
            raise SystemExit(f"{label}: {err}") from None
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
    report(prof, args.steps, wall, device, args.top)


if __name__ == "__main__":
    main()
