"""The training hot loop on a GPU: no host synchronization on steps that do not log.

Runs 20 steps of a small LokiLM (flex attention, chunked loss) through ``Trainer.fit`` with the
recipe's loss-spike rollback, token throughput, dashboard and cluster-signal callbacks, a progress
bar and the console logger, with ``torch.cuda.set_sync_debug_mode("warn")`` armed from step 6
(after the first compilations) and every synchronizing CUDA call counted per step, from one
step's batch start to the next. Steps that do not log must have none; logging steps (every 5th) may read their metrics
back. A failure lists each sync with its thread and Python stack.
"""

from __future__ import annotations

import threading
import traceback
import warnings
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from callbacks.cluster_signals import ClusterSignals
from callbacks.spike_rollback import LossSpikeRollback
from callbacks.throughput import TokenThroughput
from callbacks.wandb_dashboard import WandbDashboard
from loki.console_metrics import ConsoleLogger
from loki.data.datamodule import LokiDataModule
from loki.data.shard_writer import ShardWriter
from loki.module import LokiLM

TOKENIZER = {"spec": "test", "vocab_size": 8192, "vocab_hash": "test-8192", "eot_id": 8191}
STEPS, ARM_AT, LOG_EVERY = 20, 6, 5
STACK_FRAMES = 8  # of each sync's stack, in a failure's message


class SyncCounter(L.Callback):
    """Arms the sync debug mode at ``ARM_AT`` and records the syncs of each later step, each as
    its thread and the innermost frames of the Python stack that made it."""

    def __init__(self) -> None:
        self.per_step: dict[int, list[str]] = {}
        self._catcher = None
        self._records: list[str] = []

    def _record(self, message, category, filename, lineno, file=None, line=None) -> None:
        if "synchroniz" not in str(message):
            return
        frames = traceback.extract_stack()[:-1][-STACK_FRAMES:]
        where = " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in reversed(frames))
        self._records.append(f"[{threading.current_thread().name}] {filename}:{lineno} | {where}")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        # A step's window runs from its batch start to the next one: Lightning's own logging of
        # a step comes after the step's on_train_batch_end.
        step = trainer.global_step + 1
        if self._catcher is not None:
            self._close(step - 1)
        if step == ARM_AT:
            torch.cuda.synchronize()
            self._catcher = warnings.catch_warnings()
            self._catcher.__enter__()
            warnings.simplefilter("always")
            warnings.showwarning = self._record
            torch.cuda.set_sync_debug_mode("warn")
            self._records.clear()  # anything the arming itself reported is not the loop's

    def on_train_end(self, trainer, pl_module):
        if self._catcher is not None:  # the last step's window also holds the end of the epoch
            self._close(trainer.global_step)
        self.disarm()

    def _close(self, step: int) -> None:
        self.per_step[step] = list(self._records)
        self._records.clear()

    def disarm(self) -> None:
        torch.cuda.set_sync_debug_mode("default")
        if self._catcher is not None:
            self._catcher.__exit__(None, None, None)
            self._catcher = None


@pytest.mark.gpu
def test_no_host_sync_on_steps_that_do_not_log(tmp_path):
    writer = ShardWriter(tmp_path / "web", "web", TOKENIZER, shard_tokens=1 << 16)
    rng = np.random.default_rng(0)
    for _ in range(200):
        writer.add_document(rng.integers(0, 8000, size=1000))
    writer.close()
    data = LokiDataModule(sources={"web": [str(tmp_path / "web")]}, block_size=256,
                          micro_batch_size=4, val_fraction=0.0, seed=0)
    module = LokiLM("small", config_overrides={"attention_backend": "flex"},
                    optimizer=partial(torch.optim.AdamW, lr=3e-4, fused=True))
    counter = SyncCounter()
    trainer = L.Trainer(
        accelerator="gpu", devices=1, precision="bf16-mixed", max_steps=STEPS,
        log_every_n_steps=LOG_EVERY, logger=[CSVLogger(tmp_path, name="csv"), ConsoleLogger()],
        enable_progress_bar=True, enable_model_summary=False, enable_checkpointing=False,
        limit_val_batches=0, default_root_dir=tmp_path,
        callbacks=[TokenThroughput(window_size=5), WandbDashboard(),
                   LossSpikeRollback(warmup_steps=2, snapshot_every_n_steps=100, persistence=2),
                   ClusterSignals(), counter])
    try:
        trainer.fit(module, data)
    finally:
        counter.disarm()
    assert sorted(counter.per_step) == list(range(ARM_AT, STEPS + 1))
    quiet = {s: v for s, v in counter.per_step.items() if s % LOG_EVERY}
    logging = {s: v for s, v in counter.per_step.items() if not s % LOG_EVERY}
    print("syncs per step:", {s: len(v) for s, v in counter.per_step.items()})
    where = sorted({w for v in quiet.values() for w in v})
    assert all(not v for v in quiet.values()), "syncs on steps that do not log:\n" + "\n".join(where)
    assert all(len(v) <= 40 for v in logging.values()), logging
