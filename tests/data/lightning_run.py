"""One ``Trainer.fit`` of LokiLM ``tiny`` on test shards; used in-process and as a new process.

    python -m tests.data.lightning_run SHARDS MAX_STEPS OUT_DIR [CKPT_PATH]

Writes ``OUT_DIR/indices.json`` (sample ids of every step trained on, by global step) and
``OUT_DIR/weights.pt``; saves a checkpoint every 5 steps under ``OUT_DIR/ckpt``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import torch

from loki.data.datamodule import LokiDataModule
from loki.data.schedules import BatchSizeWarmup
from loki.module import LokiLM


class RecordSamples(L.Callback):
    def __init__(self) -> None:
        self.steps: dict[int, list[int]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.steps[trainer.global_step] = batch["index"].flatten().tolist()


def run(shards: str, max_steps: int, out: str, ckpt_path: str | None = None) -> dict:
    torch.use_deterministic_algorithms(True)
    L.seed_everything(0, verbose=False)
    dm = LokiDataModule(sources={"web": [shards]}, block_size=16, micro_batch_size=2,
                        val_fraction=0.05, val_samples=4, seed=7,
                        batch_size=BatchSizeWarmup(start=2, target=8, over_tokens=16 * 2 * 12))
    model = LokiLM("tiny", vocab_size=dm.vocab_size)
    record = RecordSamples()
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=Path(out) / "ckpt", every_n_train_steps=5,
                                               save_top_k=-1, filename="{step}")
    trainer = L.Trainer(max_steps=max_steps, accelerator="cpu", devices=1, logger=False,
                        callbacks=[record, ckpt], enable_progress_bar=False,
                        enable_model_summary=False, val_check_interval=4,
                        check_val_every_n_epoch=None, num_sanity_val_steps=0,
                        deterministic=True)
    trainer.fit(model, dm, ckpt_path=ckpt_path)
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "indices.json").write_text(json.dumps(record.steps))
    torch.save(model.state_dict(), Path(out) / "weights.pt")
    return {"steps": record.steps, "weights": model.state_dict(), "data": dm.state_dict(),
            "tokens_seen": model.tokens_seen, "epoch_size": dm.stream.sources[0].train_size}


if __name__ == "__main__":
    run(sys.argv[1], int(sys.argv[2]), sys.argv[3], *sys.argv[4:5])
