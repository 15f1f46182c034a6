"""One-GPU training-step benchmark of the 1.4B config: tokens/s, MFU, peak memory, compile time.

    python benchmarks/gpu_step.py                      # loki-1.4b on cuda:0, ~6 min on an H200
    python benchmarks/gpu_step.py --only fit,loki-flex # a subset, in that order (a name, else
                                                       # every variant it begins)
    python benchmarks/gpu_step.py --dry-run            # tiny config on the CPU: exercises the paths

Raw-loop variants, each built fresh, timed over ``--steps`` after ``--warmup`` steps (optimizer
included: fused AdamW with fp32 master weights, matmuls under bf16 autocast, no sharding; the
loss is the chunked LM head + cross-entropy of ``loki.loss`` unless the row says full-logits):

- ``loki-sdpa``               SDPA with the float ALiBi bias (memory-efficient kernel)
- ``loki-flex``               compiled FlexAttention, ALiBi as a score_mod, blocks not compiled
- ``loki-flash``              flash-attn (skipped when it cannot be imported)
- ``loki-flex(full-logits)`` as loki-flex with the plain head: the peak memory before the chunking
- ``loki-compiled(blocks)``   best attention, every block ``torch.compile``d (the recipe's default)
- ``loki-compiled(model)``    best attention, the whole model compiled, loss included
- ``loki-compiled(blocks,flex-flash)``  compiled blocks, FlexAttention on FlashAttention-4's CuTe
  kernels (skipped without flash-attn-4 or a Hopper GPU)
- ``loki-fp8-tensorwise`` / ``loki-fp8-rowwise``  compiled blocks + torchao float8 linears
  (skipped without torchao or an FP8 GPU)
- ``llama-sdpa`` / ``llama-flash``  HF ``LlamaForCausalLM`` of the same shape, eager, plain loss
- ``fit``  the Lightning path (``benchmarks/gpu_fit.py``): ``LokiLM`` + ``LokiDataModule``, FSDP2
  on one GPU, compiled blocks, torchao 8-bit AdamW, 4 micro-batches per step, the recipe's
  callbacks except distillation
- ``fit-fp8(tensorwise,fp8-gather)``  the same with ``sharding.float8``, FSDP2 gathering the
  weights in FP8
- only when named in ``--only`` (the runs behind the recipe's choices; each adds about a minute):
  ``fit(flex-flash)``, attention on FlashAttention-4's kernels; ``fit(model)``, the whole model
  compiled (``sharding.compile_scope: model``); ``fit(autotune)``, Inductor's
  ``max-autotune-no-cudagraphs`` (``sharding.compile_mode``; minutes of tuning in its first
  step); ``fit(keep-gathered)``, blocks stay gathered from forward to backward
  (``sharding.reshard_after_forward: false``: one all-gather per micro-batch instead of two,
  +2.7 GB of bf16 weights per GPU); ``fit-fp8(tensorwise)``, FP8 compute with bf16 gathers;
  ``fit-fp8(rowwise)``, rowwise scaling

MFU = tokens/s x FLOPs/token (``loki.flops``: 6N + causal attention, the same count for both
models since their matmul shapes agree) / the device's dense bf16 peak; FP8 rows also show the
FP8-peak MFU. ``first s`` is the first step's time: the compilation, printed once per row. A row
whose compiled graphs broke says how often and why after its figures (and in the JSON:
``graphs``, ``graph_breaks``).
Nothing is downloaded; a variant that fails (a missing package, out of memory, any error) prints
"skipped: <why>" and the run goes on. The summary after the table (``gpu_summary.py``) sets the
rows against each other and against the targets at micro-batch 8 x 2048: fit bf16 MFU >= 52%;
FP8 >= 1.35x bf16 tokens/s; Loki >= 1.4x HF Llama (SDPA); the Lightning path within 3% of the
raw loop.
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
from torch._dynamo.utils import counters

sys.path.insert(0, str(Path(__file__).resolve().parent))  # step_throughput, beside this file
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # callbacks/, for the fit row

from gpu_fit import FITS, FITS_ON_REQUEST, run_fit  # noqa: E402
from gpu_summary import breaks_note, gib, graph_report, pct, print_summary, split_names  # noqa: E402

from loki._optional import available  # noqa: E402
from loki.attention import flash_available  # noqa: E402
from loki.config import LokiConfig  # noqa: E402
from loki.errors import LokiError  # noqa: E402
from loki.flex_alibi import FLEX_FLASH_NEEDS, flex_flash_available  # noqa: E402
from loki.flops import flops_per_token, peak_flops  # noqa: E402
from loki.model import Loki  # noqa: E402
from loki.sharding import checkpoint_block, shard_model  # noqa: E402


def build_loki(config: LokiConfig, backend: str, compile_with: str | None, scope: str,
               fp8: str | None, checkpointing: bool, device: torch.device) -> torch.nn.Module:
    model = Loki(LokiConfig(**{**config.to_dict(), "attention_backend": backend})).to(device)
    if fp8:
        from loki.precision import convert_to_float8

        convert_to_float8(model, fp8)
    if checkpointing:
        for block in model.blocks:
            checkpoint_block(block)
    if compile_with:
        shard_model(model, None, compile=True, compile_backend=compile_with, compile_scope=scope)
    return model


def build_llama(config: LokiConfig, attn: str, device: torch.device) -> torch.nn.Module:
    from step_throughput import llama_like

    return llama_like(config, attn=attn).to(device)


def train_step(model: torch.nn.Module, kind: str, opt: torch.optim.Optimizer, idx: torch.Tensor,
               dtype: torch.dtype) -> torch.Tensor:
    """One raw-loop step: forward under autocast, backward, optimizer. ``kind``: "loki" (chunked
    loss), "loki-full" (full logits) or "llama". Returns the loss."""
    with torch.autocast(idx.device.type, dtype=dtype, enabled=dtype != torch.float32):
        if kind == "llama":
            loss = model(input_ids=idx, labels=idx).loss
        else:
            loss = model(idx, idx, return_logits=kind == "loki-full")[1]
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss


def raw_loop_inputs(model: torch.nn.Module, batch: int, seq: int, vocab: int,
                    device: torch.device) -> tuple[torch.optim.Optimizer, torch.Tensor]:
    """The raw loop's optimizer (fused AdamW on CUDA, fp32 master weights) and token batch."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    return opt, torch.randint(0, vocab, (batch, seq), device=device)


def run_variant(model: torch.nn.Module, kind: str, batch: int, seq: int, vocab: int,
                steps: int, warmup: int, device: torch.device, dtype: torch.dtype) -> dict:
    """Median seconds per training step, the first step's seconds and peak memory."""
    opt, idx = raw_loop_inputs(model, batch, seq, vocab, device)
    sync: Callable[[], None] = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(warmup + steps):
        sync()
        t0 = time.perf_counter()
        loss = train_step(model, kind, opt, idx, dtype)
        sync()
        times.append(time.perf_counter() - t0)
    timed = sorted(times[warmup:])
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"seconds": timed[len(timed) // 2], "first_s": times[0], "peak_mem_gib": peak,
            "loss": float(loss.detach())}


def variants(args: argparse.Namespace, device: torch.device) -> list[tuple[str, Callable]]:
    """(label, build) pairs; build() -> (model, kind) or raises LokiError/ImportError to skip."""
    config, ckpt = args.model_config, args.activation_checkpointing
    compile_with = "eager" if args.dry_run else "inductor"  # dry run: trace only, no codegen
    flash = device.type == "cuda" and flash_available()
    best = "flash" if flash else ("flex" if device.type == "cuda" else "sdpa")

    def need(ok: bool, why: str) -> None:
        if not ok:
            raise LokiError(why)

    def loki(backend: str, compiled: str | None = None, fp8: str | None = None,
             kind: str = "loki") -> Callable:
        def build() -> tuple[torch.nn.Module, str]:
            if backend == "flash":
                need(flash, "flash-attn is not importable (or no CUDA device)")
            if backend == "flex-flash":
                need(device.type == "cuda" and flex_flash_available(device),
                     f"flex-flash needs {FLEX_FLASH_NEEDS}")
            if fp8:
                need(available("torchao"), "torchao is not installed")
            with_compile = compile_with if compiled else None
            return build_loki(config, backend, with_compile, compiled or "blocks", fp8, ckpt,
                              device), kind
        return build

    def llama(attn: str) -> Callable:
        def build() -> tuple[torch.nn.Module, str]:
            need(available("transformers"), "transformers is not installed")
            if attn == "flash_attention_2":
                need(flash, "flash-attn is not importable (or no CUDA device)")
            return build_llama(config, attn, device), "llama"
        return build

    # flex on the CPU has no backward: the dry run checks its rows with sdpa underneath
    flex = "flex" if device.type == "cuda" else "sdpa"
    return [
        ("loki-sdpa", loki("sdpa")),
        ("loki-flex", loki(flex)),
        ("loki-flash", loki("flash")),
        ("loki-flex(full-logits)", loki(flex, kind="loki-full")),
        (f"loki-compiled(blocks,{best})", loki(best, "blocks")),
        (f"loki-compiled(model,{best})", loki(best, "model")),
        ("loki-compiled(blocks,flex-flash)", loki("flex-flash", "blocks")),
        (f"loki-fp8-tensorwise({best})", loki(best, "blocks", "tensorwise")),
        (f"loki-fp8-rowwise({best})", loki(best, "blocks", "rowwise")),
        ("llama-sdpa", llama("sdpa")),
        ("llama-flash", llama("flash_attention_2")),
    ]


# ----------------------------------------------------------------- the LM head's memory
def head_memory(device: torch.device, rows: int, config: LokiConfig) -> dict[str, float]:
    """Peak memory (GiB) of the LM head + loss forward and backward over ``rows`` positions:
    full fp32 logits against ``loki.loss.linear_cross_entropy``. CUDA: the allocator's peak;
    CPU: the process's peak RSS (VmHWM, reset through /proc/self/clear_refs)."""
    import torch.nn.functional as F

    from loki.loss import linear_cross_entropy

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    out = {}
    for name in ("full", "chunked"):
        gc.collect()
        hidden = torch.randn(rows, config.n_embd, device=device, dtype=dtype, requires_grad=True)
        weight = torch.randn(config.vocab_size, config.n_embd, device=device, dtype=dtype,
                             requires_grad=True)
        targets = torch.randint(0, config.vocab_size, (rows,), device=device)
        base = _memory_mark(device)
        if name == "full":
            loss = F.cross_entropy((hidden @ weight.t()).float(), targets)
        else:
            loss = linear_cross_entropy(hidden, weight, targets)
        loss.backward()
        out[name] = (_memory_peak(device) - base) / 2**30
        del hidden, weight, targets, loss
    return out


def _memory_mark(device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak RSS to the current RSS
    return _status_kib("VmRSS") * 1024


def _memory_peak(device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated(device)
    return _status_kib("VmHWM") * 1024


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise LokiError(f"/proc/self/status has no {key}")


# ----------------------------------------------------------------- main
def setup_run(args: argparse.Namespace) -> tuple[torch.device, torch.dtype]:
    """The run's device and compute dtype, and ``args.model_config``. ``--dry-run``: the tiny
    config for one step on the CPU in fp32; otherwise a CUDA device is required."""
    if args.dry_run:
        args.config, args.batch, args.steps, args.warmup = "tiny", 2, 1, 1
        device, dtype = torch.device("cpu"), torch.float32
    elif not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU, or pass --dry-run to check the code paths")
    else:
        device, dtype = torch.device("cuda"), torch.bfloat16
        torch.backends.cuda.matmul.allow_tf32 = True
    args.model_config = LokiConfig.from_name(args.config)
    return device, dtype


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="loki-1.4b")
    parser.add_argument("--batch", type=int, default=8, help="micro-batch (sequences)")
    parser.add_argument("--seq", type=int, default=None, help="default: the config's block_size")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--activation_checkpointing", action="store_true")
    parser.add_argument("--only", default=None,
                        help="comma-separated variant name prefixes, run in the order given")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--head-rows", dest="head_rows", type=int, default=None,
                        help="rows of the LM-head memory check (default: batch x seq)")
    parser.add_argument("--dry-run", dest="dry_run", action="store_true",
                        help="tiny config, CPU, fp32, 1 step: checks the code paths only")
    args = parser.parse_args(argv)
    device, dtype = setup_run(args)
    seq = args.seq or args.model_config.block_size
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    bf16_peak, fp8_peak = peak_flops(name, "bf16"), peak_flops(name, "fp8")
    per_token = flops_per_token(args.model_config, seq)
    print(f"{args.config}: {args.model_config.num_params() / 1e9:.3f}B params, "
          f"{per_token / 1e9:.2f} GFLOP/token (6N + causal attention), batch {args.batch} x {seq}"
          f", device {name}, dense peak bf16 {bf16_peak or 0:.3g} fp8 {fp8_peak or 0:.3g} FLOP/s")
    flash4 = device.type == "cuda" and flex_flash_available(device)
    print(f"torch {torch.__version__}; flash-attn {'yes' if flash_available() else 'no'}; "
          f"flash-attn-4 (flex-flash) {'yes' if flash4 else 'no'}; "
          f"torchao {'yes' if available('torchao') else 'no'}; "
          f"transformers {'yes' if available('transformers') else 'no'}")
    wanted = split_names(args.only) if args.only else None
    print(f"{'variant':32} {'tokens/s':>10} {'MFU':>7} {'MFU(fp8)':>9} {'peak GiB':>9} "
          f"{'first s':>8}")
    rows: list[dict] = []
    todo = [*variants(args, device), *((label, None) for label in FITS)]
    if wanted:  # the order asked for: on a short GPU lease the rows that matter most come first
        labels = [label for label, _ in todo]
        todo = list(dict.fromkeys(
            item for name in wanted for item in todo
            if (item[0] == name if name in labels else item[0].startswith(name))))
    else:
        todo = [item for item in todo if item[0] not in FITS_ON_REQUEST]
    for label, build in todo:
        row: dict = {"variant": label}
        model = None
        counters.clear()  # the graphs and graph breaks of this row only (graph_report)
        try:
            torch.manual_seed(0)
            if build is None:
                result = run_fit(args, device, seq, **FITS[label])
            else:
                model, kind = build()
                result = run_variant(model.train(), kind, args.batch, seq,
                                     args.model_config.vocab_size, args.steps, args.warmup,
                                     device, dtype)
            tps = args.batch * seq / result["seconds"]
            row.update(result, tokens_per_s=tps,
                       mfu=tps * per_token / bf16_peak if bf16_peak else None,
                       mfu_fp8=tps * per_token / fp8_peak if fp8_peak and "fp8" in label else None)
            row.update(graph_report())
            print(f"{label:32} {tps:10.0f} {pct(row['mfu']):>7} {pct(row['mfu_fp8']):>9} "
                  f"{gib(row['peak_mem_gib']):>9} {row['first_s'] or 0:8.1f}"
                  f"{breaks_note(row['graph_breaks'])}", flush=True)
        except Exception as err:  # noqa: BLE001 - one failing variant must not cost the others
            first_line = (str(err).splitlines() or [""])[0][:150]
            row["skipped"] = f"{type(err).__name__}: {first_line}"
            print(f"{label:32} skipped: {row['skipped']}", flush=True)
        finally:
            model = None
            torch._dynamo.reset()  # each row compiles afresh, not in the shadow of the last
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
        if args.json:  # after every row, so a run stopped at its time limit keeps what it measured
            Path(args.json).write_text(json.dumps(rows, indent=1))
    if not wanted or "head" in wanted:
        rows_head = args.head_rows or args.batch * seq
        mem = head_memory(device, rows_head, args.model_config)
        print(f"LM head + loss, {rows_head} rows x vocab {args.model_config.vocab_size}: peak "
              f"{mem['full']:.2f} GiB with full logits, {mem['chunked']:.2f} GiB chunked")
        rows.append({"variant": "head-memory", "rows": rows_head, **mem})
    print_summary(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
