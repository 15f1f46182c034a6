"""One-GPU training-step benchmark of the 1.4B config: tokens/s, MFU and peak memory.

    python benchmarks/gpu_step.py                      # loki-1.4b on cuda:0, < 5 min on an H100
    python benchmarks/gpu_step.py --dry-run            # tiny config on the CPU: exercises the paths

Variants, each built fresh, timed over ``--steps`` after ``--warmup`` steps (optimizer included:
fused AdamW with fp32 master weights, matmuls under bf16 autocast, i.e. "bf16-mixed" on one GPU,
no sharding):

- ``loki-flash``    attention_backend=flash (skipped when flash-attn cannot be imported)
- ``loki-sdpa``     SDPA with the ALiBi bias
- ``loki-compiled`` the best attention backend, every block ``torch.compile``d
- ``loki-fp8``      compiled + torchao float8 linears (skipped without torchao or an FP8 GPU)
- ``llama-sdpa`` / ``llama-flash``  HF ``LlamaForCausalLM`` of the same shape (needs transformers)

MFU = tokens/s x FLOPs/token (``loki.flops``: 6N + causal attention, the same count for both
models since their matmul shapes agree) / the device's dense bf16 peak; FP8 rows also show the
FP8-peak MFU. Nothing is downloaded; a missing package or an out-of-memory variant prints
"skipped: <why>" and the run goes on. Targets (issue 9): bf16 MFU >= 50% with flash-attn on an
H100; FP8 >= 1.4x bf16 tokens/s.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # step_throughput, beside this file

from loki._optional import available  # noqa: E402
from loki.attention import flash_available  # noqa: E402
from loki.config import LokiConfig  # noqa: E402
from loki.errors import LokiError  # noqa: E402
from loki.flops import flops_per_token, peak_flops  # noqa: E402
from loki.model import Loki  # noqa: E402
from loki.sharding import checkpoint_block, shard_model  # noqa: E402


def build_loki(config: LokiConfig, backend: str, compile_with: str | None, fp8: bool,
               checkpointing: bool, device: torch.device) -> torch.nn.Module:
    model = Loki(LokiConfig(**{**config.to_dict(), "attention_backend": backend})).to(device)
    if fp8:
        from loki.precision import convert_to_float8

        convert_to_float8(model)
    if checkpointing:
        for block in model.blocks:
            checkpoint_block(block)
    if compile_with:
        shard_model(model, None, compile=True, compile_backend=compile_with)
    return model


def build_llama(config: LokiConfig, attn: str, device: torch.device) -> torch.nn.Module:
    from step_throughput import llama_like

    return llama_like(config, attn=attn).to(device)


def run_variant(model: torch.nn.Module, is_loki: bool, batch: int, seq: int, vocab: int,
                steps: int, warmup: int, device: torch.device, dtype: torch.dtype) -> dict:
    """Median seconds per training step and peak memory of ``model``."""
    fused = device.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)
    idx = torch.randint(0, vocab, (batch, seq), device=device)
    sync: Callable[[], None] = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(warmup + steps):
        sync()
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = model(idx, idx)[1] if is_loki else model(input_ids=idx, labels=idx).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"seconds": times[len(times) // 2], "peak_mem_gib": peak, "loss": float(loss.detach())}


def variants(args: argparse.Namespace, device: torch.device) -> list[tuple[str, Callable]]:
    config, ckpt = args.model_config, args.activation_checkpointing
    compile_with = "eager" if args.dry_run else "inductor"  # dry run: trace only, no codegen
    flash = device.type == "cuda" and flash_available()
    best = "flash" if flash else "sdpa"
    out: list[tuple[str, Callable]] = []

    def need_flash() -> None:
        if not flash:
            raise LokiError("flash-attn is not importable (or no CUDA device)")

    def need_fp8() -> None:
        if not available("torchao"):
            raise LokiError("torchao is not installed")

    def need_hf() -> None:
        if not available("transformers"):
            raise LokiError("transformers is not installed")

    out.append(("loki-flash", lambda: (need_flash(), build_loki(config, "flash", None, False,
                                                                ckpt, device))[1]))
    out.append(("loki-sdpa", lambda: build_loki(config, "sdpa", None, False, ckpt, device)))
    out.append((f"loki-compiled({best})",
                lambda: build_loki(config, best, compile_with, False, ckpt, device)))
    out.append((f"loki-fp8({best},compiled)",
                lambda: (need_fp8(), build_loki(config, best, compile_with, True, ckpt,
                                                device))[1]))
    out.append(("llama-sdpa", lambda: (need_hf(), build_llama(config, "sdpa", device))[1]))
    out.append(("llama-flash", lambda: (need_hf(), need_flash(),
                                        build_llama(config, "flash_attention_2", device))[2]))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="loki-1.4b")
    parser.add_argument("--batch", type=int, default=4, help="micro-batch (sequences)")
    parser.add_argument("--seq", type=int, default=None, help="default: the config's block_size")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--activation_checkpointing", action="store_true")
    parser.add_argument("--only", default=None, help="comma-separated variant name prefixes")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--dry-run", dest="dry_run", action="store_true",
                        help="tiny config, CPU, fp32, 1 step: checks the code paths only")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.config, args.batch, args.steps, args.warmup = "tiny", 2, 1, 1
        device, dtype = torch.device("cpu"), torch.float32
    elif not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU, or pass --dry-run to check the code paths")
    else:
        device, dtype = torch.device("cuda"), torch.bfloat16
        torch.backends.cuda.matmul.allow_tf32 = True
    args.model_config = LokiConfig.from_name(args.config)
    seq = args.seq or args.model_config.block_size
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    bf16_peak, fp8_peak = peak_flops(name, "bf16"), peak_flops(name, "fp8")
    per_token = flops_per_token(args.model_config, seq)
    print(f"{args.config}: {args.model_config.num_params() / 1e9:.3f}B params, "
          f"{per_token / 1e9:.2f} GFLOP/token (6N + causal attention), batch {args.batch} x {seq}"
          f", device {name}, dense peak bf16 {bf16_peak or 0:.3g} fp8 {fp8_peak or 0:.3g} FLOP/s")
    print(f"torch {torch.__version__}; flash-attn {'yes' if flash_available() else 'no'}; "
          f"torchao {'yes' if available('torchao') else 'no'}; "
          f"transformers {'yes' if available('transformers') else 'no'}")
    header = f"{'variant':28} {'tokens/s':>10} {'MFU':>7} {'MFU(fp8)':>9} {'peak GiB':>9}"
    print(header)
    rows = []
    for label, build in variants(args, device):
        if args.only and not any(label.startswith(p) for p in args.only.split(",")):
            continue
        row: dict = {"variant": label}
        try:
            torch.manual_seed(0)
            model = build().train()
            result = run_variant(model, label.startswith("loki"), args.batch, seq,
                                 args.model_config.vocab_size, args.steps, args.warmup, device,
                                 dtype)
            tps = args.batch * seq / result["seconds"]
            row.update(result, tokens_per_s=tps,
                       mfu=tps * per_token / bf16_peak if bf16_peak else None,
                       mfu_fp8=tps * per_token / fp8_peak if fp8_peak and "fp8" in label else None)
            print(f"{label:28} {tps:10.0f} {_pct(row['mfu']):>7} {_pct(row['mfu_fp8']):>9} "
                  f"{_gib(row['peak_mem_gib']):>9}", flush=True)
        except (LokiError, ImportError, RuntimeError, torch.OutOfMemoryError) as err:
            row["skipped"] = f"{type(err).__name__}: {str(err).splitlines()[0][:150]}"
            print(f"{label:28} skipped: {row['skipped']}", flush=True)
        finally:
            model = None
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
    _ratios(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _gib(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def _ratios(rows: list[dict]) -> None:
    tps = {r["variant"]: r["tokens_per_s"] for r in rows if "tokens_per_s" in r}
    fp8 = next((v for k, v in tps.items() if k.startswith("loki-fp8")), None)
    compiled = next((v for k, v in tps.items() if k.startswith("loki-compiled")), None)
    if fp8 and compiled:
        print(f"fp8 / bf16 (compiled): {fp8 / compiled:.2f}x  (target >= 1.4x)")
    for attn in ("sdpa", "flash"):
        if f"loki-{attn}" in tps and f"llama-{attn}" in tps:
            print(f"loki / llama ({attn}): {tps[f'loki-{attn}'] / tps[f'llama-{attn}']:.2f}x")


if __name__ == "__main__":
    main()
