"""``DistillSteps``: the distillation step batches, read from the candidate cache.

``TeacherDistillation`` hands a ``DistillSteps`` to the DataModule
(``attach_interleave("distill", every_n, steps)``), which calls it for every distillation step it
plans; the DataModule owns the order, the builder only turns a planned layout into tensors. A
batch holds A_d micro-batches of P prompts x k candidates, with ``kind`` "distill".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from loki.distill.cache import CandidateCache

KIND = "distill"


@dataclass
class DistillSteps:
    """This rank's distillation step batches, for the DataModule (a *sized* interleave source).

    Size (the batch-size warmup rule): an LM step carries ``A x B x T`` training tokens per rank
    (A accumulated micro-batches of B sequences of T tokens); a distillation step carries
    ``A_d x P`` prompts per rank, each counting its ground-truth continuation (C tokens) on the
    token clock, with ``A_d = max(1, round(A x B x T / (P x C)))``. So the tokens per step match
    the LM step's at every point of the warmup while the micro-batch (P prompts x k candidates,
    memory) stays fixed. ``accumulation`` set: a fixed ``A_d`` instead.

    Order: global step prompts are positions ``[start, start + count)`` of the cache's endless
    shuffled order (``start`` kept in the DataModule's state); rank r takes the r-th of W equal
    parts, so ranks never share prompts. The DataModule's reseeds (loss-spike rollback) re-permute
    the positions not consumed yet. Picklable: the cache opens lazily in each process."""

    cache: str
    prompts: int
    accumulation: int | None = None
    rank: int = 0
    world_size: int = 1
    seed: int = 0
    lm_micro_tokens: int = 0
    """B x T of an LM micro-batch (the warmup rule's numerator); 0: one micro-batch per step."""
    _cache: CandidateCache | None = field(default=None, repr=False)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cache": None}

    def open(self) -> CandidateCache:
        if self._cache is None:
            self._cache = CandidateCache.open(self.cache)
        return self._cache

    # ------------------------------------------------------------------ the sized protocol
    def micro_batches(self, lm_accumulation: int) -> int:
        """A_d: micro-batches of P prompts per rank while LM steps accumulate ``lm_accumulation``."""
        if self.accumulation is not None:
            return self.accumulation
        if not self.lm_micro_tokens:
            return 1
        C = int(self.open().manifest["max_new_tokens"])
        return max(1, round(lm_accumulation * self.lm_micro_tokens / (self.prompts * C)))

    def step_units(self, lm_accumulation: int) -> int:
        """Prompts of one global distillation step."""
        return self.micro_batches(lm_accumulation) * self.prompts * self.world_size

    def step_tokens(self, start: int, count: int, reseeds: list[tuple[int, int]]) -> int:
        """Token-clock tokens of global positions [start, start + count): their ground truth."""
        cache = self.open()
        rows = cache.rows(start, count, self.seed, reseeds)
        return int(cache.gather("cont_len", rows)[:, 0].sum())

    def build(self, layout: dict) -> dict[str, Any]:
        """This rank's share of a planned step (see ``loki.data.stream.Interleave``)."""
        n = layout["count"] // self.world_size
        start = layout["start"] + self.rank * n
        rows = self.open().rows(start, n, self.seed, layout.get("reseeds", ()))
        batch = self._batch(rows, n // self.prompts, layout["index"])
        batch["distill_next"] = layout["start"] + layout["count"]
        return batch

    # ------------------------------------------------------------------ a plain make_step
    def start(self, index: int) -> int:
        """Start of step ``index`` with a fixed accumulation (no warmup, no reseeds)."""
        return (index * self.world_size + self.rank) * (self.accumulation or 1) * self.prompts

    def __call__(self, index: int) -> dict[str, Any]:
        n = (self.accumulation or 1) * self.prompts
        return self._batch(self.open().rows(self.start(index), n, self.seed), n // self.prompts,
                           index)

    def _batch(self, rows, accumulation: int, index: int) -> dict[str, Any]:
        cache = self.open()
        micro = [cache.micro_batch(rows[a * self.prompts:(a + 1) * self.prompts])
                 for a in range(accumulation)]
        batch: dict[str, Any] = {k: torch.stack([m[k] for m in micro]) for k in micro[0]}
        batch["kind"] = KIND
        batch["distill_index"] = int(index)
        return batch  # tensors (A_d, P, k, ...)
