"""Tokens/s per device and MFU for step batches, through Lightning's ``ThroughputMonitor``.

Lightning's callback does the timing, windowing and logging; this subclass tells it how to count
a LokiLM step batch (tensors shaped (A, B, T) with the accumulation axis first) and replaces its
peak-FLOPs lookup with ``loki.flops.PEAK_FLOPS`` (dense figures, bf16 or fp8 as configured: the
trainer precision is fp32 when FSDP2's policy does the bf16 casting, which would make
Lightning pick the fp32 peak). FLOPs per batch come from ``LokiLM.flops_per_batch``.

Logged (rank 0): ``train/device/items_per_sec`` = tokens/s/device, ``train/device/mfu``,
``train/items_per_sec`` (all devices), ``train/device/flops_per_sec``, and the same for ``val``.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ThroughputMonitor

from loki.errors import LokiError
from loki.flops import PEAK_FLOPS, peak_flops


def step_samples(batch: dict[str, Any]) -> int:
    """Sequences in a step batch (A * B) or a plain (B, T) batch."""
    ids = batch["input_ids"]
    return ids.numel() // ids.size(-1)


def step_tokens(batch: dict[str, Any]) -> int:
    """Tokens in a step batch (A * B * T) or a plain (B, T) batch."""
    return batch["input_ids"].numel()


class TokenThroughput(ThroughputMonitor):
    def __init__(
        self, compute: str = "bf16", peak_flops: float | None = None, window_size: int = 50
    ) -> None:
        """
        Args:
            compute: the tensor-core format the matmuls run in, for the MFU denominator:
                "bf16" or "fp8" (with ``sharding.float8``).
            peak_flops: dense peak FLOP/s of one device, for a GPU missing from the table.
            window_size: steps in the rolling average.
        """
        if compute not in ("bf16", "fp8"):
            raise LokiError(f"TokenThroughput compute must be bf16 or fp8, got {compute!r}")
        super().__init__(batch_size_fn=step_samples, length_fn=step_tokens,
                         window_size=window_size)
        self.compute = compute
        self.peak_override = peak_flops

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        device = trainer.strategy.root_device
        peak = self.peak_override
        if peak is None and device.type == "cuda":
            name = torch.cuda.get_device_name(device)
            peak = peak_flops(name, self.compute)
            if peak is None:
                raise LokiError(
                    f"no dense {self.compute} peak known for {name!r} (table: "
                    f"{', '.join(PEAK_FLOPS)}); set TokenThroughput's peak_flops"
                )
        self.available_flops = peak  # None on CPU: tokens/s are logged, MFU is not
        for throughput in self._throughputs.values():
            throughput.available_flops = peak
