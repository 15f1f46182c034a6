"""LM head + softmax cross-entropy, forward and backward, for vocabulary sizes around 32k.

    python benchmarks/vocab_hamming.py [--hidden 2048] [--tokens 512] [--reps 7]

The LokiLM authors observed that vocabulary sizes with a lower Hamming weight (fewer 1 bits)
"generally" gave higher throughput. This measures only the part of the model the vocabulary
size touches: logits = h @ W^T, cross-entropy, and the gradients of h and W, at the 1.4B
model's hidden size. CPU in float32 always; CUDA in bfloat16 when a GPU is present. Medians of
``--reps`` timed runs after warm-up; nothing is claimed beyond this table.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

SIZES = (31_744, 32_000, 32_064, 32_768, 33_024)


def head_step(vocab: int, hidden: int, tokens: int, device: str, dtype: torch.dtype):
    """A closure running one fwd+bwd of the head and loss for this vocabulary size."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    h = torch.randn(tokens, hidden, generator=gen).to(device, dtype).requires_grad_()  # (N, C)
    w = (torch.randn(vocab, hidden, generator=gen) * 0.02).to(device, dtype).requires_grad_()
    y = torch.randint(0, vocab, (tokens,), generator=gen).to(device)  # (N,)

    def once() -> None:
        logits = h @ w.t()  # (N, V)
        loss = F.cross_entropy(logits.float(), y)
        loss.backward()
        h.grad = w.grad = None

    return once


def table(device: str, dtype: torch.dtype, hidden: int, tokens: int, reps: int) -> None:
    steps = {v: head_step(v, hidden, tokens, device, dtype) for v in SIZES}
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times: dict[int, list[float]] = {v: [] for v in SIZES}
    cpu: dict[int, list[float]] = {v: [] for v in SIZES}
    for rep in range(reps + 2):  # sizes interleaved, so drift and other load hit all alike
        for v, once in steps.items():
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            once()
            sync()
            if rep >= 2:  # two warm-up rounds
                times[v].append(time.perf_counter() - t0)
                cpu[v].append(time.process_time() - c0)
    med = {v: statistics.median(t) for v, t in times.items()}
    # on a shared machine wall time includes waiting for other processes; CPU seconds of this
    # process (all its threads) do not, so they are printed too (CPU device only)
    med_cpu = {v: statistics.median(t) for v, t in cpu.items()}
    print(f"\n{device} ({dtype}, hidden {hidden}, {tokens} tokens, {reps} interleaved reps"
          f"{', threads ' + str(torch.get_num_threads()) if device == 'cpu' else ''})")
    print(f"{'vocab':>7} {'binary':>17} {'1-bits':>6} {'median ms':>10} {'min ms':>9} "
          f"{'tokens/s':>10} {'ns/vocab':>9} {'vs 32000':>8} {'CPU s':>7} {'vs 32000':>8}")
    for v, t in med.items():
        print(f"{v:>7} {v:>17b} {v.bit_count():>6} {t * 1e3:>10.2f} {min(times[v]) * 1e3:>9.2f} "
              f"{tokens / t:>10.0f} {t * 1e9 / v:>9.1f} {t / med[32_000]:>7.3f}x "
              f"{med_cpu[v]:>7.2f} {med_cpu[v] / med_cpu[32_000]:>7.3f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=2048, help="LokiLM 1.4B hidden size")
    parser.add_argument("--tokens", type=int, default=512, help="tokens per step on the CPU")
    parser.add_argument("--gpu_tokens", type=int, default=8192, help="tokens per step on a GPU")
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    table("cpu", torch.float32, args.hidden, args.tokens, args.reps)
    if torch.cuda.is_available():
        table("cuda", torch.bfloat16, args.hidden, args.gpu_tokens, max(args.reps, 20))
    else:
        print("\n(no CUDA device: GPU table skipped)")


if __name__ == "__main__":
    main()
