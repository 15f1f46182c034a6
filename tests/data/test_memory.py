"""Memory stays flat while streaming a corpus 20x larger than another (RSS sampled throughout)."""

from __future__ import annotations

import os

import numpy as np

from loki.data.datamodule import LokiDataModule
from loki.data.schedules import BatchSizeWarmup
from loki.data.shard_writer import ShardWriter
from tests.data.fixtures import TOKENIZER


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _corpus(folder, tokens):
    w = ShardWriter(folder, "web", TOKENIZER, shard_tokens=1 << 20)
    doc = np.random.default_rng(0).integers(0, 255, size=999)
    for _ in range(tokens // 1000):
        w.add_document(doc)
    w.close()
    return folder


def _stream_epoch(folder) -> tuple[int, float]:
    """Stream one full epoch (every token read once); (steps, highest RSS seen in MB)."""
    dm = LokiDataModule(sources={"web": [str(folder)]}, block_size=256, micro_batch_size=16,
                        val_fraction=0, batch_size=BatchSizeWarmup(target=64))
    dm.setup("fit")
    steps = dm.stream.sources[0].train_size // 64
    it = iter(dm.train_dataloader())
    peak = 0.0
    for k in range(steps):
        dm.on_before_batch_transfer(next(it), 0)
        if k % 20 == 0:
            peak = max(peak, rss_mb())
    return steps, max(peak, rss_mb())


def test_rss_does_not_grow_with_the_corpus(tmp_path):
    small = _stream_epoch(_corpus(tmp_path / "x1", 600_000))
    large = _stream_epoch(_corpus(tmp_path / "x20", 12_000_000))
    assert large[0] >= 19 * small[0]
    # the 20x corpus is 24 MB of uint16 tokens (96 MB as the int64 the loader makes): a loader
    # that kept what it read, or a memory map of it, would grow by at least that much. The
    # allocator itself grows by up to ~7 MB over the longer epoch (more in a process that ran
    # other tests first), and levels off there whatever the corpus size.
    assert large[1] - small[1] < 12, (small, large)
