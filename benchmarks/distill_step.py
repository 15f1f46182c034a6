"""Time of a distillation step vs a plain LM step (forward + backward + AdamW), CPU by default.

    python benchmarks/distill_step.py                      # `small`, B=8, T=256, k=3 candidates
    python benchmarks/distill_step.py --candidates 4 --steps 10

The plain step is one micro-batch of B x T tokens. The distillation step is sized the way
``TeacherDistillation`` sizes it: P = round(B x T / (k x T_c)) prompts x k candidates of
T_c = prompt + continuation - 1 tokens, scored by the min-CE objective. Prints both times, the
ratio, and the amortized overhead at 1 distillation step in ``every_n`` (targets: <= 2.5x per
distillation step, <= 1.4x amortized at 1-in-4).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

# `callbacks` is a top-level package of the repository: importable from a checkout without install
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callbacks.distillation import TeacherDistillation  # noqa: E402
from loki.module import LokiLM  # noqa: E402


def _paired(plain, distill, steps: int, warmup: int = 2) -> dict[str, float]:
    """Median wall and CPU seconds of each, measured in alternation so that load from other
    processes on a shared machine hits both alike (CPU time is the steadier figure there)."""
    for _ in range(warmup):
        plain()
        distill()
    out: dict[str, list[float]] = {"plain_wall": [], "plain_cpu": [], "distill_wall": [],
                                   "distill_cpu": []}
    for _ in range(steps):
        for name, fn in (("plain", plain), ("distill", distill)):
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            out[f"{name}_wall"].append(time.perf_counter() - wall)
            out[f"{name}_cpu"].append(time.process_time() - cpu)
    return {k: statistics.median(v) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="small")
    parser.add_argument("--vocab-size", type=int, default=16384, help="the demo tokenizer's")
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--block-size", type=int, default=256)
    parser.add_argument("--candidates", type=int, default=3, help="ground truth + teachers")
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--every-n", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    module = LokiLM(args.config, vocab_size=args.vocab_size)
    opt = module.configure_optimizers()
    V, B, T, k = args.vocab_size, args.micro_batch, args.block_size, args.candidates
    Lp, C = args.prompt_tokens, args.new_tokens
    Tc = Lp + C - 1
    P = max(1, round(B * T / (k * Tc)))

    x = torch.randint(0, V, (B, T + 1))
    plain = {"kind": "lm", "input_ids": x[:, :-1], "labels": x[:, 1:]}
    ids = torch.randint(0, V, (P, k, Tc + 1))
    ids[:, :, :Lp] = ids[:, :1, :Lp]  # one prompt, k continuations
    labels = ids[..., 1:].clone()
    labels[..., : Lp - 1] = -100
    labels[:, 1:, Lp - 1 + C // 2:] = -100  # teachers stop early sometimes: padding
    distill = {"kind": "distill", "input_ids": ids[..., :-1], "labels": labels,
               "n_bytes": (labels != -100).sum(-1) * 4, "source": torch.arange(k).expand(P, k),
               "distill_index": 0}
    callback = TeacherDistillation("unused", every_n_batches=args.every_n)
    callback.names = ["ground_truth"] + [f"teacher{i}" for i in range(1, k)]

    def step(loss_fn):
        def run():
            loss = loss_fn()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        return run

    t = _paired(step(lambda: module.loss_on(plain)),
                step(lambda: callback.objective(module, distill)[0]), args.steps)
    n = args.every_n
    result = {
        "config": args.config, "params_M": round(module.model.num_params() / 1e6, 1),
        "threads": torch.get_num_threads(), "plain_tokens": B * T,
        "distill_tokens": P * k * Tc, "prompts": P, "candidates": k,
        **{f"{key}_s": round(v, 4) for key, v in t.items()},
    }
    for clock in ("cpu", "wall"):
        ratio = t[f"distill_{clock}"] / t[f"plain_{clock}"]
        result[f"ratio_per_distill_step_{clock}"] = round(ratio, 3)
        result[f"amortized_1_in_{n}_{clock}"] = round((n - 1 + ratio) / n, 3)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
