"""Tokens/s per device and MFU for step batches, through Lightning's ``ThroughputMonitor``.

Lightning's callback does the timing, windowing and logging; this subclass tells it how to count
a LokiLM step batch (tensors shaped (A, B, T) with the accumulation axis first) and replaces its
peak-FLOPs lookup with ``loki.flops.PEAK_FLOPS`` (dense figures, bf16 or fp8 as configured: the
trainer precision is fp32 when FSDP2's policy does the bf16 casting, which would make
Lightning pick the fp32 peak). FLOPs per batch come from ``LokiLM.flops_per_batch``.

Logged (rank 0): ``train/device/items_per_sec`` = tokens/s/device, ``train/device/mfu``,
``train/items_per_sec`` (all devices), ``train/device/flops_per_sec``, and the same for ``val``.

Two departures from Lightning's callback:

- It synchronizes CUDA (to read the clock after the GPU's work) only on the steps that log,
  not after every step; counts still accumulate every step, and the rolling window of
  ``window_size`` steps becomes the logged steps that span it.
- A GPU missing from the peak table (B200, H800, L40S, ...) does not stop the run: tokens/s
  are logged, MFU is left out, and one warning says how to get it (``peak_flops``).
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import ThroughputMonitor
from lightning.pytorch.trainer.states import RunningStage
from lightning.pytorch.utilities import rank_zero_warn

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
        self, compute: Literal["bf16", "fp8"] = "bf16", peak_flops: float | None = None,
        window_size: int = 50,
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
        self.window_steps = window_size
        self._flops_pending: dict[RunningStage, int] = {}
        self._warned_unknown: set[str] = set()

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # the window counts logged steps here (see the module docstring); two at least
        every = max(1, int(getattr(trainer, "log_every_n_steps", 1) or 1))
        self.kwargs["window_size"] = max(2, math.ceil(self.window_steps / every) + 1)
        super().setup(trainer, pl_module, stage)
        device = trainer.strategy.root_device
        peak = self.peak_override
        if peak is None and device.type == "cuda":
            name = torch.cuda.get_device_name(device)
            peak = peak_flops(name, self.compute)
            if peak is None and name not in self._warned_unknown:
                self._warned_unknown.add(name)
                rank_zero_warn(
                    f"TokenThroughput: no dense {self.compute} peak known for {name!r} (table: "
                    f"{', '.join(PEAK_FLOPS)}); logging tokens/s without MFU. Set "
                    "TokenThroughput's peak_flops to the device's dense peak to get MFU."
                )
        self.available_flops = peak  # None on CPU or an unknown GPU: no MFU
        for throughput in self._throughputs.values():
            throughput.available_flops = peak

    def _start(self, trainer: L.Trainer) -> None:
        super()._start(trainer)
        self._flops_pending.pop(trainer.state.stage, None)

    @torch.inference_mode()
    def _update(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                iter_num: int) -> None:
        stage = trainer.state.stage
        if stage != RunningStage.TRAINING:  # validation is rare: Lightning's own way
            super()._update(trainer, pl_module, batch, iter_num)
            return
        self._lengths[stage] += step_tokens(batch)
        self._samples[stage] += step_samples(batch)
        self._batches[stage] += 1
        flops = getattr(pl_module, "flops_per_batch", None)
        self._flops_pending[stage] = self._flops_pending.get(stage, 0) + (flops or 0)
        if not trainer._logger_connector.should_update_logs:
            return  # no clock reading, so no need to wait for the GPU
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()  # the clock must see the GPU's work
        self._throughputs[stage].update(
            time=time.perf_counter() - self._t0s[stage], batches=self._batches[stage],
            samples=self._samples[stage], lengths=self._lengths[stage],
            flops=self._flops_pending.pop(stage) if flops is not None else None)
