"""The training stream: which samples make up optimizer step k, and the step batches themselves.

A stream state is a small dict of integers (plus the reseed history); ``plan`` turns a state into
the next step's layout and the state after it without reading any tokens, so DataLoader workers
and the main process agree on every step and the main process can count what the trainer
actually consumed (see ``LokiDataModule.on_before_batch_transfer``).

Layout of one LM step: ``A * B * W`` global sample slots (A accumulated micro-batches of B
sequences on each of W ranks). Slot ``g`` (counted over the whole run) draws its source from a
keyed uniform and the mixture weights at the step's token count; each source serves its slots
from its own position counter through ``SourceOrder``. Rank r takes slots ``[r*A*B, (r+1)*A*B)``
of the step, so the ranks together cover consecutive positions: disjoint, and nothing skipped.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from loki.data.order import SourceOrder, key_of, uniform
from loki.data.schedules import BatchSizeWarmup, MixtureSchedule
from loki.data.shards import Remote, TokenShardSet
from loki.errors import LokiError


def initial_state(seed: int, sources: list[str]) -> dict:
    # seed: the current seed (mixture draws); base_seed + reseeds: the sample order history.
    return {"step": 0, "lm_steps": 0, "tokens": 0, "slots": 0, "seed": int(seed),
            "base_seed": int(seed),
            "consumed": {s: 0 for s in sources}, "reseeds": [], "interleave": {},
            "interleave_pos": {}}


def interleave_reseeds(state: dict, kind: str) -> list[tuple[int, int]]:
    """The reseeds that reach an interleaved kind: (its stream position then, new seed)."""
    return [(ev["interleave_at"][kind], ev["seed"]) for ev in state["reseeds"]
            if kind in ev.get("interleave_at", {})]


@dataclass
class SourceSamples:
    """One source: its shard set, the training samples of each shard, and their order."""

    name: str
    shard_sets: list[TokenShardSet]
    block_size: int
    val_every: int = 0  # hold out sample i of a shard when i % val_every == val_every - 1
    window: int = 0
    id_offset: int = 0  # added to sample ids so that ids are unique across sources
    shards: list[tuple[int, int]] = field(init=False)  # (set, shard) per flat shard id
    samples: np.ndarray = field(init=False)  # samples per flat shard (train + val)
    order: SourceOrder = field(init=False)

    def __post_init__(self) -> None:
        self.shards, counts = [], []
        for s, shard_set in enumerate(self.shard_sets):
            for i, n_tokens in enumerate(shard_set.shard_tokens):
                self.shards.append((s, i))
                counts.append(max(0, (n_tokens - 1) // self.block_size))
        self.samples = np.asarray(counts, dtype=np.int64)
        self.first_id = np.concatenate([[0], np.cumsum(self.samples)])
        k = self.val_every
        train = self.samples - (self.samples // k if k else 0)
        self.order = SourceOrder(self.name, train.tolist(), self.window)

    @property
    def num_samples(self) -> int:
        return int(self.first_id[-1])

    @property
    def train_size(self) -> int:
        return self.order.size

    def train_index(self, j: np.ndarray) -> np.ndarray:
        """Training sample j of a shard -> its sample index in the shard (skipping held-out)."""
        k = self.val_every
        return j if not k else (j // (k - 1)) * k + j % (k - 1)

    def val_samples(self) -> list[tuple[int, int]]:
        k = self.val_every
        if not k:
            return []
        return [(f, m * k + k - 1) for f, n in enumerate(self.samples.tolist())
                for m in range(n // k)]

    def read(self, flat_shard: int, sample: int, remote: Remote, cache_dir: str | None,
             max_cached: int) -> np.ndarray:
        s, i = self.shards[flat_shard]
        reader = self.shard_sets[s].reader(i, remote, cache_dir, max_cached)
        return reader.read(sample * self.block_size, self.block_size + 1)


@dataclass
class Interleave:
    """Every ``every_n``-th step (1-based global step index) comes from ``make_step``.

    A plain ``make_step(index)`` adds no tokens to the clock. A *sized* step source (one with
    ``step_units``, e.g. ``loki.distill.steps.DistillSteps``) is planned like an LM step:

    - ``step_units(A) -> int``: global units (prompts) of a step taken while LM steps accumulate
      ``A`` micro-batches, so interleaved steps follow the batch-size warmup;
    - ``step_tokens(start, count, reseeds) -> int``: what units ``[start, start + count)`` of its
      own stream add to the token clock;
    - ``build(layout) -> dict``: this rank's step batch for a layout with ``index``, ``start``,
      ``count`` and ``reseeds`` ((position, seed) pairs: the stream's reseeds, at this kind's
      position), so a rollback's reseed reaches the interleaved order too.
    """

    kind: str
    every_n: int
    make_step: Callable[[int], dict]

    @property
    def sized(self) -> bool:
        return hasattr(self.make_step, "step_units")


@dataclass
class TrainStream:
    sources: list[SourceSamples]
    warmup: BatchSizeWarmup
    mixture: MixtureSchedule
    micro_batch_size: int
    block_size: int
    rank: int = 0
    world_size: int = 1
    max_tokens: int | None = None
    remote: Remote = "range"
    cache_dir: str | None = None
    max_cached_shards: int = 8
    interleaves: list[Interleave] = field(default_factory=list)

    # ------------------------------------------------------------------ planning (no reads)
    def interleave_at(self, step: int) -> Interleave | None:
        for it in self.interleaves:
            if (step + 1) % it.every_n == 0:
                return it
        return None

    def done(self, state: dict) -> bool:
        return self.max_tokens is not None and state["tokens"] >= self.max_tokens

    def plan(self, state: dict) -> tuple[dict, dict]:
        """(layout of step ``state["step"]``, state after it)."""
        nxt = copy.deepcopy(state)
        nxt["step"] += 1
        it = self.interleave_at(state["step"])
        if it is not None:
            index = state["interleave"].get(it.kind, 0)
            nxt["interleave"][it.kind] = index + 1
            layout = {"kind": it.kind, "index": index, "step": state["step"], "tokens": 0}
            if it.sized:
                A = self.warmup.accumulation(state["tokens"], self.micro_batch_size,
                                             self.world_size)
                start = state.get("interleave_pos", {}).get(it.kind, 0)
                count = int(it.make_step.step_units(A))
                reseeds = interleave_reseeds(state, it.kind)
                tokens = int(it.make_step.step_tokens(start, count, reseeds))
                nxt.setdefault("interleave_pos", {})[it.kind] = start + count
                nxt["tokens"] += tokens
                layout.update(A=A, start=start, count=count, reseeds=reseeds, tokens=tokens)
            return layout, nxt
        B, W, T = self.micro_batch_size, self.world_size, self.block_size
        A = self.warmup.accumulation(state["tokens"], B, W)
        n = A * B * W
        slots = np.arange(state["slots"], state["slots"] + n, dtype=np.int64)
        cum = np.cumsum(self.mixture.weights(state["tokens"]))
        u = uniform(key_of(state["seed"], "mixture"), slots)
        src = np.minimum(np.searchsorted(cum, u, side="right"), len(cum) - 1)
        pos = np.empty(n, dtype=np.int64)
        skipped = state.get("skipped")
        for s, source in enumerate(self.sources):
            sel = src == s
            count = int(sel.sum())
            start = state["consumed"][source.name]
            if skipped:
                pos[sel] = self._positions(source, start, count, state, skipped)
                nxt["consumed"][source.name] = int(pos[sel][-1]) + 1 if count else start
            else:
                pos[sel] = start + np.arange(count)
                nxt["consumed"][source.name] += count
        nxt["slots"] += n
        nxt["tokens"] += n * T
        nxt["lm_steps"] += 1
        mine = slice(self.rank * A * B, (self.rank + 1) * A * B)
        return {"kind": "lm", "A": A, "source": src[mine], "position": pos[mine],
                "step": state["step"], "base_seed": state["base_seed"],
                "reseeds": state["reseeds"], "tokens": n * T}, nxt

    def _positions(self, source: SourceSamples, start: int, count: int, state: dict,
                   skipped: list[int]) -> np.ndarray:
        """``count`` stream positions from ``start`` on, passing over positions whose sample is
        in ``skipped`` (samples that led to a loss spike: never served again, in any epoch)."""
        skip = np.asarray(skipped, dtype=np.int64)
        skip = skip[(skip >= source.id_offset) & (skip < source.id_offset + source.num_samples)]
        if not len(skip):
            return start + np.arange(count)
        if len(np.unique(skip)) >= source.train_size:
            raise LokiError(f"every training sample of source {source.name} is marked skipped")
        reseeds = [(ev["at"][source.name], ev["seed"]) for ev in state["reseeds"]]
        out: list[np.ndarray] = []
        need, p = count, start
        while need > 0:
            cand = p + np.arange(need, dtype=np.int64)
            shard, j = source.order.locate(cand, state["base_seed"], reseeds)
            ids = source.id_offset + source.first_id[shard] + source.train_index(j)
            kept = cand[~np.isin(ids, skip)]
            out.append(kept)
            need -= len(kept)
            p += len(cand)
        return np.concatenate(out)[:count]

    # ------------------------------------------------------------------ reading
    def materialize(self, layout: dict) -> dict:
        """The step batch of a layout: (A, B, T) tensors for this rank."""
        if layout["kind"] != "lm":
            it = next(i for i in self.interleaves if i.kind == layout["kind"])
            batch = it.make_step.build(layout) if it.sized else it.make_step(layout["index"])
            return {**batch, "tokens": layout["tokens"]}
        A, B, T = layout["A"], self.micro_batch_size, self.block_size
        rows = np.empty((A * B, T + 1), dtype=np.int64)
        ids = np.empty(A * B, dtype=np.int64)
        src = layout["source"]
        for s, source in enumerate(self.sources):
            sel = np.nonzero(src == s)[0]
            if len(sel) == 0:
                continue
            reseeds = [(ev["at"][source.name], ev["seed"]) for ev in layout["reseeds"]]
            shard, j = source.order.locate(layout["position"][sel], layout["base_seed"], reseeds)
            sample = source.train_index(j)
            for row, f, i in zip(sel.tolist(), shard.tolist(), sample.tolist()):
                rows[row] = source.read(f, i, self.remote, self.cache_dir,
                                        self.max_cached_shards)
            ids[sel] = source.id_offset + source.first_id[shard] + sample
        x = torch.from_numpy(rows).view(A, B, T + 1)
        return {"kind": "lm", "tokens": layout["tokens"], "input_ids": x[..., :-1].contiguous(),
                "labels": x[..., 1:].contiguous(),
                "index": torch.from_numpy(ids).view(A, B),
                "source": torch.from_numpy(src.astype(np.int64)).view(A, B)}

    def steps(self, state: dict, worker: int = 0, num_workers: int = 1,
              ) -> Iterator[tuple[dict, dict]]:
        """(layout, state after) for every step from ``state``; reads only this worker's."""
        while not self.done(state):
            layout, state = self.plan(state)
            if layout["step"] % num_workers == worker:
                yield layout, state

    # ------------------------------------------------------------------ validation
    def val_batches(self, extra: list[tuple[SourceSamples, int, int]], limit: int | None,
                    ) -> list[list[tuple[SourceSamples, int, int]]]:
        """Fixed validation batches of this rank: held-out samples, then ``extra``."""
        items = [(src, f, i) for src in self.sources for f, i in src.val_samples()] + extra
        if limit is not None and len(items) > limit:
            keep = np.linspace(0, len(items) - 1, limit).round().astype(int)
            items = [items[k] for k in keep]
        B, W = self.micro_batch_size, self.world_size
        n_batches = len(items) // (B * W)
        batches = [items[b * B:(b + 1) * B] for b in range(n_batches * W)]
        return batches[self.rank::W]

    def read_val(self, batch: list[tuple[SourceSamples, int, int]]) -> dict:
        rows = np.stack([src.read(f, i, self.remote, self.cache_dir, self.max_cached_shards)
                         for src, f, i in batch])
        x = torch.from_numpy(rows)
        return {"input_ids": x[:, :-1].contiguous(), "labels": x[:, 1:].contiguous()}
