"""The Lightning path of ``benchmarks/gpu_step.py``: ``Trainer.fit`` of the 1.4B recipe on one GPU.

``LokiLM`` + ``LokiDataModule`` on generated token shards, FSDP2 (``ModelParallelStrategy``,
data_parallel_size=1, bf16 params / fp32 reduce), compiled blocks, torchao 8-bit AdamW (torch
AdamW when torchao is missing), ``FIT_ACCUM`` micro-batches per step, and the recipe's callbacks
except distillation and the end-of-fit benchmark suite: throughput, the dashboard with an offline
wandb logger, loss-spike rollback and the cluster signals, with the console logger's line.
Tokens/s are timed over the steps after warmup with one CUDA sync at each end. The rows
(``FITS``) vary one choice of the recipe each.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

from loki._optional import available
from loki.config import LokiConfig
from loki.errors import LokiError
from loki.flex_alibi import FLEX_FLASH_NEEDS, flex_flash_available

FIT_ACCUM = 4  # micro-batches per optimizer step (the recipe's first batch size on 8 GPUs)
# The fit rows: ShardingConfig fields over the recipe's defaults, and the attention backend
# (default: auto, which is flex on a GPU without flash-attn).
FITS: dict[str, dict] = {
    "fit": {},
    "fit-fp8(tensorwise,fp8-gather)": {"float8": True, "float8_all_gather": True},
    "fit(flex-flash)": {"attention_backend": "flex-flash"},
    "fit(model)": {"compile_scope": "model"},
    "fit(autotune)": {"compile_mode": "max-autotune-no-cudagraphs"},
    "fit(keep-gathered)": {"reshard_after_forward": False},
    "fit(flex-flash,keep-gathered)": {"attention_backend": "flex-flash",
                                      "reshard_after_forward": False},
    "fit-fp8(tensorwise)": {"float8": True, "float8_all_gather": False},
    "fit-fp8(rowwise)": {"float8": True, "float8_recipe": "rowwise", "float8_all_gather": False},
}
# run only when named: each adds about a minute to a run that should stay near 6 minutes
FITS_ON_REQUEST = ("fit(flex-flash)", "fit(model)", "fit(autotune)", "fit(keep-gathered)",
                   "fit(flex-flash,keep-gathered)", "fit-fp8(tensorwise)", "fit-fp8(rowwise)")


def run_fit(args: argparse.Namespace, device: torch.device, seq: int,
            attention_backend: str | None = None, profile: bool = False,
            **sharding: object) -> dict:
    """Seconds per micro-batch of ``Trainer.fit`` over the recipe's path (module docstring);
    ``sharding``: ShardingConfig fields that differ from the recipe's. ``profile``: the timed
    steps also run under ``torch.profiler``, returned as ``"profile"`` (for
    ``benchmarks/gpu_profile.py``). The generated shards and the offline wandb run live in a
    temporary folder, removed when the row ends."""
    with tempfile.TemporaryDirectory(prefix="loki-gpu-step-", ignore_cleanup_errors=True) as tmp:
        return _run_fit(Path(tmp), args, device, seq, attention_backend, profile, **sharding)


def _run_fit(root: Path, args: argparse.Namespace, device: torch.device, seq: int,
             attention_backend: str | None, profile: bool, **sharding: object) -> dict:
    import numpy as np
    from lightning.pytorch.strategies import ModelParallelStrategy

    from callbacks.cluster_signals import ClusterSignals
    from callbacks.spike_rollback import LossSpikeRollback
    from callbacks.throughput import TokenThroughput
    from callbacks.wandb_dashboard import WandbDashboard
    from loki.console_metrics import ConsoleLogger
    from loki.data.datamodule import LokiDataModule
    from loki.data.schedules import BatchSizeWarmup
    from loki.data.shard_writer import ShardWriter
    from loki.module import LokiLM
    from loki.sharding import ShardingConfig

    config = args.model_config
    if attention_backend:
        if attention_backend == "flex-flash" and not flex_flash_available(device):
            raise LokiError(f"flex-flash needs {FLEX_FLASH_NEEDS}")
        config = LokiConfig(**{**config.to_dict(), "attention_backend": attention_backend})
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    steps, warmup = args.steps + 2, args.warmup
    per_step = FIT_ACCUM * args.batch
    vocab = config.vocab_size
    tokenizer = {"spec": "bench", "name": "bench", "vocab_hash": f"bench{vocab}",
                 "vocab_size": vocab, "eot_id": vocab - 1}
    writer = ShardWriter(root / "web", "web", tokenizer, shard_tokens=1 << 22)
    rng = np.random.default_rng(0)
    need_tokens = (warmup + steps + 2) * per_step * (seq + 1)
    for _ in range(need_tokens // 4096 + 1):
        writer.add_document(rng.integers(0, vocab - 1, size=4096))
    writer.close()
    data = LokiDataModule(sources={"web": [str(root / "web")]}, block_size=seq,
                          micro_batch_size=args.batch,
                          batch_size=BatchSizeWarmup(points=f"0:{per_step}"), val_fraction=0.0,
                          seed=0)
    if available("torchao") and not args.dry_run:  # on the CPU its fused step compiles for minutes
        from loki.precision import adamw_8bit

        def optimizer(params):  # noqa: ANN001, ANN202
            return adamw_8bit(params, lr=3e-4, backend="torchao")
    else:
        def optimizer(params):  # noqa: ANN001, ANN202
            return torch.optim.AdamW(params, lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1,
                                     fused=device.type == "cuda")
    on_gpu = device.type == "cuda"
    module = LokiLM(config, optimizer=optimizer, sharding=ShardingConfig(**{
        "param_dtype": "bfloat16" if on_gpu else None,
        "reduce_dtype": "float32" if on_gpu else None, "compile": not args.dry_run,
        **sharding}))
    timer = _StepTimer(warmup, profile)
    callbacks = [TokenThroughput(window_size=10), WandbDashboard(),
                 LossSpikeRollback(warmup_steps=2, snapshot_every_n_steps=100, persistence=2),
                 ClusterSignals(), timer]
    os.environ.setdefault("WANDB_MODE", "offline")
    loggers: list = [ConsoleLogger()]
    if available("wandb"):
        from lightning.pytorch.loggers import WandbLogger

        loggers.append(WandbLogger(save_dir=str(root), offline=True, project="gpu-step"))
    strategy = ModelParallelStrategy(data_parallel_size=1, tensor_parallel_size=1)
    trainer = L.Trainer(accelerator="gpu" if on_gpu else "cpu", devices=1, strategy=strategy,
                        precision="32-true", max_steps=warmup + steps, logger=loggers,
                        log_every_n_steps=10, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False,
                        limit_val_batches=0, default_root_dir=root, callbacks=callbacks)
    try:
        trainer.fit(module, data)
    finally:
        if loggers:  # the next fit row starts a run of its own
            import wandb

            wandb.finish()
    tokens = per_step * seq * len(timer.times)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if on_gpu else None
    result = {"seconds": timer.elapsed / len(timer.times) / FIT_ACCUM, "first_s": timer.first,
              "peak_mem_gib": peak, "tokens": tokens, "loss": module.last_train_loss}
    if profile:
        result.update(profile=timer.profiler, micro_batches=len(timer.times) * FIT_ACCUM)
    return result


class _StepTimer(L.Callback):
    """Wall time of the steps after ``warmup`` (one sync at each end: none in between), and
    with ``profile`` a ``torch.profiler`` run over the same steps."""

    def __init__(self, warmup: int, profile: bool = False) -> None:
        self.warmup, self.times, self.t0, self.first, self.elapsed = warmup, [], 0.0, None, 0.0
        self.start = time.perf_counter()
        self.profile, self.profiler = profile, None

    @staticmethod
    def _sync(trainer: L.Trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        step = trainer.global_step
        if step == 1:
            self._sync(trainer)
            self.first = time.perf_counter() - self.start
        if step == self.warmup:
            self._sync(trainer)
            if self.profile:
                activities = [torch.profiler.ProfilerActivity.CPU]
                if trainer.strategy.root_device.type == "cuda":
                    activities.append(torch.profiler.ProfilerActivity.CUDA)
                self.profiler = torch.profiler.profile(activities=activities)
                self.profiler.start()
            self.t0 = time.perf_counter()
        elif step > self.warmup:
            self.times.append(step)
            if step == trainer.max_steps:
                self._sync(trainer)
                self.elapsed = time.perf_counter() - self.t0
                if self.profiler is not None:
                    self.profiler.stop()
