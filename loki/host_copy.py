"""Reading a GPU scalar on the host without waiting for the GPU.

``float(t)`` or ``t.item()`` on a CUDA tensor blocks until every kernel queued before it has run:
in a training loop that drains the GPU's queue every step. A :class:`HostCopy` instead queues a
copy into pinned host memory with an event behind it. ``ready()`` asks the event without
blocking; ``value()`` waits on that event only, which has long passed once a later step has been
queued and run, so reading a step late costs nothing.
"""

from __future__ import annotations

import math

import torch


class HostCopy:
    """A 0-dim tensor on its way to the host (see the module docstring). None reads as NaN."""

    def __init__(self, value: torch.Tensor | None) -> None:
        self.event: torch.cuda.Event | None = None
        if value is None:
            self.host = torch.tensor(math.nan)
        elif value.is_cuda:
            self.host = torch.empty((), dtype=value.dtype, pin_memory=True)
            self.host.copy_(value.detach(), non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.host = value.detach().clone()

    def ready(self) -> bool:
        """Whether the copy has landed (never blocks)."""
        return self.event is None or self.event.query()

    def tensor(self) -> torch.Tensor:
        """The value as a CPU tensor, waiting for the copy if it has not landed."""
        if self.event is not None:
            self.event.synchronize()
        return self.host

    def value(self) -> float:
        return float(self.tensor())
