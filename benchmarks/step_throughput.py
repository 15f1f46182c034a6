"""Forward + backward tokens/s of Loki against Hugging Face ``LlamaForCausalLM`` of the same shape.

    python benchmarks/step_throughput.py --config small [--n_embd 512 --n_head 8] [--device cpu]

Both models get the same width, depth, heads, SwiGLU width and vocabulary (Llama: RoPE instead of
ALiBi, SDPA with ``is_causal``; Loki: its ``auto`` attention, on the CPU SDPA with a 4-D float
ALiBi bias, which runs the fused flash kernel; and the chunked LM head + loss that ``LokiLM``
trains with, ``--loss full`` for the plain head), untied embeddings, no dropout, randomly
initialised, the same token batch. Each round
times one training step (forward, loss, backward) of every contender in turn, so machine drift
hits both alike; the figure is the median over rounds after warmup. Printed: tokens/s of each and
the ratio Loki / Llama (goal >= 1.0x). Needs ``transformers`` (the 'eval' or 'dev' extra).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from loki._optional import require
from loki.config import LokiConfig
from loki.console import transformers_without_torchao
from loki.model import Loki


def llama_like(config: LokiConfig, attn: str = "sdpa") -> torch.nn.Module:
    """``LlamaForCausalLM`` with Loki's shape (same parameter count up to norm weights)."""
    transformers_without_torchao()  # no CUDA-kernel load failures printed on a CPU
    transformers = require("transformers", "eval")
    hf = transformers.LlamaConfig(
        hidden_size=config.n_embd, intermediate_size=config.ffn_hidden,
        num_hidden_layers=config.n_layer, num_attention_heads=config.n_head,
        num_key_value_heads=config.n_head, vocab_size=config.vocab_size,
        max_position_embeddings=max(config.block_size, 2048), rms_norm_eps=config.norm_eps,
        tie_word_embeddings=config.tie_embeddings, attention_bias=False, mlp_bias=False,
        attn_implementation=attn,
    )
    return transformers.LlamaForCausalLM(hf)


def loki_step(model: Loki, idx: torch.Tensor, chunked: bool = True) -> Callable[[], None]:
    def step() -> None:
        model(idx, idx, return_logits=not chunked)[1].backward()

    return step


def llama_step(model: torch.nn.Module, idx: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        model(input_ids=idx, labels=idx).loss.backward()

    return step


def median_seconds(
    steps: dict[str, Callable[[], None]], rounds: int, warmup: int, sync: Callable[[], None]
) -> dict[str, float]:
    """Median wall time per call of each step, calls interleaved round by round."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(warmup + rounds):
        for name, step in steps.items():
            sync()
            t0 = time.perf_counter()
            step()
            sync()
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def build_config(args: argparse.Namespace) -> LokiConfig:
    overrides = {k: v for k, v in (("n_embd", args.n_embd), ("n_head", args.n_head),
                                  ("n_layer", args.n_layer)) if v is not None}
    if "n_embd" in overrides:  # SwiGLU width follows the width as in the named sizes
        overrides["ffn_hidden"] = None
    overrides["attention_backend"] = "auto"
    return LokiConfig.from_name(args.config, **overrides)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="small")
    parser.add_argument("--n_embd", type=int, default=None)
    parser.add_argument("--n_head", type=int, default=None)
    parser.add_argument("--n_layer", type=int, default=None)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=None, help="default: the config's block_size")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--loss", choices=("chunked", "full"), default="chunked",
                        help="Loki's LM head + loss: chunked (as LokiLM trains) or full logits")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    config = build_config(args)
    seq = args.seq or config.block_size
    torch.manual_seed(0)
    loki = Loki(config).to(device).train()
    llama = llama_like(config).to(device).train()
    idx = torch.randint(0, config.vocab_size, (args.batch, seq), device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    secs = median_seconds(
        {"loki": loki_step(loki, idx, args.loss == "chunked"), "llama": llama_step(llama, idx)},
        args.rounds, args.warmup, sync,
    )
    tokens = args.batch * seq
    n_loki = sum(p.numel() for p in loki.parameters())
    n_llama = sum(p.numel() for p in llama.parameters())
    print(f"shape: n_layer={config.n_layer} n_head={config.n_head} n_embd={config.n_embd} "
          f"ffn={config.ffn_hidden} vocab={config.vocab_size}; batch {args.batch} x {seq} "
          f"on {device} ({torch.get_num_threads()} threads), loki loss: {args.loss}")
    print(f"  loki   {n_loki / 1e6:8.2f}M params  {tokens / secs['loki']:10.0f} tokens/s")
    print(f"  llama  {n_llama / 1e6:8.2f}M params  {tokens / secs['llama']:10.0f} tokens/s")
    print(f"  ratio loki/llama (fwd+bwd tokens/s, median of {args.rounds}): "
          f"{secs['llama'] / secs['loki']:.3f}x")


if __name__ == "__main__":
    main()
