"""Does the loader keep up? Tokens/s LokiDataModule delivers vs tokens/s the ``small`` model
trains on (CPU), and peak RSS while streaming two corpus sizes.

    python benchmarks/dataloader.py [--tokens 5M] [--scale 10] [--steps 300]

Synthetic token shards (uint16, a 32k vocabulary like the pruned tokenizer) are written to a
temporary folder. Loader: step batches as the Trainer consumes them (A=4 accumulated
micro-batches of 8 x 256, main process, no workers). Model: fwd + bwd + AdamW of ``Loki``
``small`` on the same (8, 256) micro-batches. Each peak RSS comes from a fresh process that
streams one full epoch of its corpus, so the two figures are comparable. Target: ratio >= 20x.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOKENIZER = {"spec": "synthetic-32k", "name": "synthetic", "vocab_hash": "bench0000000000",
             "vocab_size": 32000, "eot_id": 31999}
B, T, A = 8, 256, 4


def write_corpus(folder: Path, tokens: int) -> Path:
    from loki.data.shard_writer import ShardWriter

    rng = np.random.default_rng(0)
    writer = ShardWriter(folder, "web", TOKENIZER, shard_tokens=1 << 24)
    docs = [rng.integers(0, 31999, size=int(n)) for n in rng.integers(200, 2000, size=64)]
    written, k = 0, 0
    while written < tokens:
        writer.add_document(docs[k % len(docs)])
        written += len(docs[k % len(docs)]) + 1
        k += 1
    writer.close()
    return folder


def make_datamodule(folder: Path):
    from loki.data.datamodule import LokiDataModule
    from loki.data.schedules import BatchSizeWarmup

    dm = LokiDataModule(sources={"web": [str(folder)]}, block_size=T, micro_batch_size=B,
                        val_fraction=0, batch_size=BatchSizeWarmup(target=A * B))
    dm.setup("fit")
    return dm


def loader_tokens_per_s(folder: Path, steps: int) -> float:
    dm = make_datamodule(folder)
    it = iter(dm.train_dataloader())
    dm.on_before_batch_transfer(next(it), 0)  # open the shards outside the timing
    start = time.perf_counter()
    for _ in range(steps):
        dm.on_before_batch_transfer(next(it), 0)
    return steps * A * B * T / (time.perf_counter() - start)


def model_tokens_per_s(steps: int) -> float:
    import torch

    from loki.config import LokiConfig
    from loki.model import Loki

    torch.manual_seed(0)
    config = LokiConfig.from_name("small")
    model = Loki(config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, config.vocab_size, (B, T + 1))
    for i in range(steps + 1):
        if i == 1:  # first step warms up allocators and kernels
            start = time.perf_counter()
        _, loss = model(x[:, :-1], x[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return steps * B * T / (time.perf_counter() - start)


def epoch_peak_rss(folder: Path) -> dict:
    """Stream one full epoch in this process; peak RSS in MB (called in a fresh process)."""
    dm = make_datamodule(folder)
    steps = dm.stream.sources[0].train_size // (A * B)
    it = iter(dm.train_dataloader())
    for _ in range(steps):
        dm.on_before_batch_transfer(next(it), 0)
    # VmHWM, not getrusage's ru_maxrss: Linux carries the parent's peak over fork + exec
    status = Path("/proc/self/status").read_text().split("\n")
    hwm = next((int(ln.split()[1]) for ln in status if ln.startswith("VmHWM:")), None)
    peak = hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"steps": steps, "tokens": steps * A * B * T, "peak_rss_mb": peak / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", default="5M", help="tokens of the smaller corpus")
    parser.add_argument("--scale", type=int, default=10, help="the larger corpus is this x larger")
    parser.add_argument("--steps", type=int, default=300, help="loader steps to time")
    parser.add_argument("--model_steps", type=int, default=5, help="model steps to time")
    parser.add_argument("--_rss", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._rss:
        print(json.dumps(epoch_peak_rss(Path(args._rss))))
        return
    from loki.data.schedules import parse_tokens

    small_tokens = parse_tokens(args.tokens)
    with tempfile.TemporaryDirectory() as tmp:
        corpora = {s: write_corpus(Path(tmp) / f"x{s}", s * small_tokens) for s in (1, args.scale)}
        loader = loader_tokens_per_s(corpora[1], args.steps)
        model = model_tokens_per_s(args.model_steps)
        print(f"loader: {loader:,.0f} tokens/s (step batches {A}x{B}x{T}, main process)")
        print(f"model : {model:,.0f} tokens/s (Loki small fwd+bwd+AdamW, {B}x{T}, CPU)")
        print(f"ratio : {loader / model:.0f}x (target >= 20x)")
        for scale, folder in corpora.items():
            out = subprocess.run([sys.executable, __file__, "--_rss", str(folder)], check=True,
                                 capture_output=True, text=True, cwd=ROOT)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"peak RSS, one epoch of {scale * small_tokens / 1e6:.0f}M tokens "
                  f"({r['steps']} steps): {r['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
