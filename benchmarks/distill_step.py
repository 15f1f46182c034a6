"""Time of a distillation step vs a plain LM step (forward + backward + AdamW), CPU by default.

    python benchmarks/distill_step.py                      # `small`, B=8, T=256, k=3 candidates
    python benchmarks/distill_step.py --candidates 4 --steps 10

The plain step is one micro-batch of B x T tokens. The distillation step is sized the way
``TeacherDistillation`` sizes it: P = round(B x T / (k x T_c)) prompts x k candidates of
T_c = prompt + continuation - 1 tokens, scored by the min-CE objective. Prints both times, the
ratio, and the amortized overhead at 1 distillation step in ``every_n`` (targets: <= 2.5x per
distillation step, <= 1.4x amortized at 1-in-4).

Cache-scale row (``--cache-sizes 200M,2G``): candidate caches of each size are generated
(random tokens, the 1.4B layout: Lp = C = 256, k = 4, shards of ~100 MB) into a temporary
folder; for each, a fresh process reads ``--cache-steps`` distillation steps (A x P prompts,
``--cache-workers`` DataLoader workers, the memory-mapped reader) and reports its peak RSS (main
process and the largest worker) and prompts/s. Target: the 2 GB cache's peak RSS within 10% of
the 200 MB one's (memory does not grow with the cache).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
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


# ---------------------------------------------------------------------- cache-scale row
def _size(text: str) -> int:
    from loki.data.schedules import parse_tokens

    return parse_tokens(text)  # 200M, 2G: the same suffixes, counted in bytes here


def write_cache(folder: Path, n_bytes: int, Lp: int = 256, C: int = 256, k: int = 4,
                shard_bytes: int = 100_000_000, vocab: int = 32000) -> int:
    """A random candidate cache of about ``n_bytes`` in the real layout; returns its prompts."""
    from loki.distill.cache import finalize, write_shard

    per_prompt = 4 * (Lp + k * C + 2 * k) + 8 + 8 * k + 2 * k
    n = max(1, n_bytes // per_prompt)
    per_shard = max(1, shard_bytes // per_prompt)
    rng = np.random.default_rng(0)
    tasks = 0
    for rank, start in enumerate(range(0, n, per_shard)):
        m = min(per_shard, n - start)
        arrays = {"prompt_ids": rng.integers(0, vocab, (m, Lp), dtype=np.int32),
                  "prompt_index": np.arange(start, start + m, dtype=np.int64),
                  "cont_ids": rng.integers(0, vocab, (m, k, C), dtype=np.int32),
                  "cont_len": np.full((m, k), C, dtype=np.int32),
                  "n_bytes": np.full((m, k), 4 * C, dtype=np.int32),
                  "seeds": np.zeros((m, k), dtype=np.int64),
                  "attempts": np.ones((m, k), dtype=np.int16)}
        write_shard(folder, rank, arrays, {"report": {}})
        tasks = rank + 1
    header = {"student": {"tokenizer": "synthetic", "vocab_hash": "bench", "vocab_size": vocab,
                          "pad_id": 0, "eot_id": vocab - 1},
              "prompt_tokens": Lp, "max_new_tokens": C, "soft_top_k": 0,
              "sources": [{"name": "ground_truth", "kind": "ground_truth"}] + [
                  {"name": f"t{i}", "kind": "fake"} for i in range(1, k)]}
    finalize(folder, header, tasks)
    return n


class _Steps(torch.utils.data.IterableDataset):
    def __init__(self, steps, count: int) -> None:
        self.steps, self.count = steps, count

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        w, n = (0, 1) if info is None else (info.id, info.num_workers)
        for index in range(w, self.count, n):
            yield self.steps(index)


def read_cache(folder: str, steps: int, prompts: int, accumulation: int, workers: int) -> dict:
    """Stream ``steps`` distillation steps from a cache; peak RSS and prompts/s."""
    from callbacks.distillation import DistillSteps

    source = DistillSteps(folder, prompts, accumulation)
    loader = torch.utils.data.DataLoader(_Steps(source, steps), batch_size=None,
                                         num_workers=workers)
    start, n = time.perf_counter(), 0
    for batch in loader:
        n += batch["index"].numel()
    seconds = time.perf_counter() - start
    kib = 1024  # ru_maxrss is in KiB on Linux
    main_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * kib / 2**20
    worker_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * kib / 2**20
    return {"prompts": n, "prompts_per_s": round(n / seconds, 1),
            "peak_rss_main_mb": round(main_mb, 1), "peak_rss_worker_mb": round(worker_mb, 1),
            "peak_rss_loader_mb": round(main_mb + workers * worker_mb, 1)}


def cache_scale(sizes: list[str], steps: int, prompts: int, accumulation: int,
                workers: int) -> dict:
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            folder = Path(tmp) / size
            n = write_cache(folder, _size(size))
            disk = sum(f.stat().st_size for f in folder.rglob("*.npy"))
            out = subprocess.run(
                [sys.executable, __file__, "--_read-cache", str(folder), "--cache-steps",
                 str(steps), "--cache-prompts", str(prompts), "--cache-accumulation",
                 str(accumulation), "--cache-workers", str(workers)],
                check=True, capture_output=True, text=True).stdout
            rows[size] = {"cache_prompts": n, "cache_mb": round(disk / 2**20), **json.loads(out)}
    small, large = rows[sizes[0]], rows[sizes[-1]]
    return {"cache_scale": rows, "peak_rss_ratio_largest_vs_smallest": round(
        large["peak_rss_loader_mb"] / small["peak_rss_loader_mb"], 3)}


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
    parser.add_argument("--cache-sizes", default=None,
                        help="cache-scale row instead of the step timing: e.g. 200M,2G")
    parser.add_argument("--cache-steps", type=int, default=200)
    parser.add_argument("--cache-prompts", type=int, default=8, help="P per micro-batch")
    parser.add_argument("--cache-accumulation", type=int, default=4)
    parser.add_argument("--cache-workers", type=int, default=2)
    parser.add_argument("--_read-cache", dest="read_cache", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.read_cache:
        print(json.dumps(read_cache(args.read_cache, args.cache_steps, args.cache_prompts,
                                    args.cache_accumulation, args.cache_workers)))
        return
    if args.cache_sizes:
        print(json.dumps(cache_scale(args.cache_sizes.split(","), args.cache_steps,
                                     args.cache_prompts, args.cache_accumulation,
                                     args.cache_workers), indent=1))
        return
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
