"""The order in which one source's samples are served: a function of (seed, epoch, position).

Why not a shuffle buffer or a stored permutation: a buffer makes the next sample depend on the
buffer's contents (resume needs them saved), and a stored permutation of 250B / 2048 = 122M
samples is ~1 GB per epoch. Instead each epoch is

1. a seeded permutation of the shards, cut into windows of ``window`` shards (0 = all shards in
   one window: a full shuffle), and
2. inside each window a keyed Feistel permutation of its samples, computed position by position
   (O(1) memory, any position computable directly).

So the sample at stream position P (counted over all epochs) is a pure function of the seed
history, and resuming needs only P. Windows keep reads local to a few shards, which is what a
shard-by-shard remote cache needs; with local memory-mapped shards a full shuffle is fine.

``reseed`` (loss-spike rollback) must change the order of what is not consumed yet without
repeating or skipping anything. A reseed at epoch position p with seed s: windows that start at
or after p use s for their keys; the current window's remaining positions [p, end) are permuted
among themselves with s (the earlier part is unchanged). Several reseeds compose the same way.
Later epochs use the newest seed.
"""

from __future__ import annotations

import hashlib

import numpy as np

_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def key_of(*parts: int | str) -> int:
    """A 64-bit key from any tuple of ints and strings (stable across processes and runs)."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little")


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a bijective scramble of uint64 values."""
    with np.errstate(over="ignore"):
        x = x.astype(np.uint64, copy=True)
        x ^= x >> np.uint64(30)
        x *= _M1
        x ^= x >> np.uint64(27)
        x *= _M2
        x ^= x >> np.uint64(31)
    return x


def uniform(key: int, index: np.ndarray) -> np.ndarray:
    """Deterministic uniforms in [0, 1) for integer indices under ``key``."""
    with np.errstate(over="ignore"):
        h = mix64(index.astype(np.uint64) + np.uint64(key))
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53


def feistel(x: np.ndarray, n: int, key: int, rounds: int = 4) -> np.ndarray:
    """A keyed bijection of [0, n) applied to ``x`` (balanced Feistel net + cycle walking)."""
    x = np.asarray(x, dtype=np.int64)
    if n <= 1:
        return x.copy()
    bits = max(2, (n - 1).bit_length())
    half = (bits + 1) // 2
    mask = np.uint64((1 << half) - 1)
    shift = np.uint64(half)
    keys = [np.uint64(key_of(key, r)) for r in range(rounds)]

    def permute(y: np.ndarray) -> np.ndarray:
        left, right = y >> shift, y & mask
        for k in keys:
            left, right = right, left ^ (mix64(right ^ k) & mask)
        return (left << shift) | right

    y = x.astype(np.uint64)
    todo = np.ones(len(y), dtype=bool)
    while todo.any():  # cycle walking: re-permute until back inside [0, n); domain < 4n
        y[todo] = permute(y[todo])
        todo = y >= np.uint64(n)
    return y.astype(np.int64)


class SourceOrder:
    """Maps stream positions of one source to (shard, sample-within-shard) pairs."""

    def __init__(self, name: str, samples_per_shard: list[int], window: int = 0) -> None:
        self.name = name
        self.counts = np.asarray(samples_per_shard, dtype=np.int64)
        self.size = int(self.counts.sum())  # samples per epoch
        self.window = window if window > 0 else len(self.counts)
        self._epoch_cache: tuple | None = None

    def _epoch(self, epoch: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Shard permutation and window start positions of one epoch (cached, O(shards))."""
        if self._epoch_cache is None or self._epoch_cache[:2] != (epoch, seed):
            perm = np.random.default_rng(key_of(seed, self.name, epoch)).permutation(
                len(self.counts))
            # Window w covers perm[w * window:(w + 1) * window]; an empty window repeats its
            # start, and searchsorted(side="right") then picks the non-empty one after it.
            cum = np.concatenate([[0], np.cumsum(self.counts[perm])])
            n_windows = -(-len(perm) // self.window)
            starts = cum[np.minimum(np.arange(n_windows + 1) * self.window, len(perm))]
            self._epoch_cache = (epoch, seed, perm, starts)
        return self._epoch_cache[2], self._epoch_cache[3]

    def locate(self, positions: np.ndarray, seed: int, reseeds: list[tuple[int, int]],
               ) -> tuple[np.ndarray, np.ndarray]:
        """Shard ids and sample indices (within the shard) of absolute stream positions.

        ``reseeds``: (absolute position, new seed) in the order they happened."""
        positions = np.asarray(positions, dtype=np.int64)
        shard = np.empty_like(positions)
        local = np.empty_like(positions)
        epochs = positions // self.size
        for epoch in np.unique(epochs):
            sel = np.nonzero(epochs == epoch)[0]
            s, loc = self._locate_in_epoch(int(epoch), positions[sel] - epoch * self.size,
                                           seed, reseeds)
            shard[sel], local[sel] = s, loc
        return shard, local

    def _locate_in_epoch(self, epoch: int, p: np.ndarray, seed: int,
                         reseeds: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
        base = epoch * self.size
        epoch_seed = seed
        layers = []
        for at, new_seed in reseeds:
            if at <= base:
                epoch_seed = new_seed  # reseeded before this epoch began
            elif at < base + self.size:
                layers.append((at - base, new_seed))
        perm, starts = self._epoch(epoch, epoch_seed)
        win = np.searchsorted(starts, p, side="right") - 1
        ws, we = starts[win], starts[win + 1]
        q = p.copy()
        key_seed = np.full(len(p), epoch_seed, dtype=np.int64)
        done = np.zeros(len(p), dtype=bool)
        for at, new_seed in reversed(layers):  # newest first
            hit = ~done & (at <= q)
            fresh = hit & (at <= ws)  # window not started when reseeded: fresh keys
            key_seed[fresh] = new_seed
            done |= fresh
            inner = hit & ~fresh
            for w_end in np.unique(we[inner]):
                sel = inner & (we == w_end)
                q[sel] = at + feistel(q[sel] - at, int(w_end) - at,
                                      key_of(new_seed, self.name, epoch, at))
        shard = np.empty_like(p)
        local = np.empty_like(p)
        for w, k in sorted(set(zip(win.tolist(), key_seed.tolist()))):
            sel = (win == w) & (key_seed == k)
            start, stop = int(starts[w]), int(starts[w + 1])
            r = feistel(q[sel] - start, stop - start, key_of(k, self.name, epoch, w))
            shards = perm[w * self.window:(w + 1) * self.window]
            inner_starts = np.concatenate([[0], np.cumsum(self.counts[shards])])
            j = np.searchsorted(inner_starts, r, side="right") - 1
            shard[sel] = shards[j]
            local[sel] = r - inner_starts[j]
        return shard, local
