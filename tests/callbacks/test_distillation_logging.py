"""What a distillation run writes to metrics.csv: each row holds the values measured at its step.

The logging contract: ``train/loss`` is in the rows of plain LM steps only; ``train/distill_loss``
and the ``distill/*`` columns are in the rows of distillation steps only; the metrics logged at
every step (``train/lr``, ``train/grad_norm``, ``trainer/tokens_seen``, ...) are in every row.
Lightning re-sends the last value of a key a step did not log; ``LokiLM`` stops that."""

from __future__ import annotations

import lightning as L
import torch

from callbacks.distillation import TeacherDistillation
from loki.data.datamodule import LokiDataModule
from loki.metrics_csv import read_metrics
from loki.metrics_log import ResumableCSVLogger
from loki.module import LokiLM
from loki.report_training import distill_section, training_section
from tests.distill.conftest import cache, loki_ckpt, shards, student  # noqa: F401 (fixtures)


def _fit_logged(tmp_path, shards_dir, spec, cache_dir, steps, every) -> list[dict[str, float]]:
    dm = LokiDataModule(sources={"web": [shards_dir]}, block_size=16, micro_batch_size=4,
                        val_fraction=0.0, tokenizer=spec, seed=7)
    torch.manual_seed(0)
    module = LokiLM({"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32},
                    vocab_size=dm.vocab_size, tokenizer=spec)
    logger = ResumableCSVLogger(str(tmp_path), name="csv")
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=logger,
                        log_every_n_steps=every, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False,
                        default_root_dir=tmp_path, limit_val_batches=0,
                        callbacks=[TeacherDistillation(cache_dir, summary_file=None)])
    trainer.fit(module, dm)
    return read_metrics(str(tmp_path / "csv" / "metrics.csv"))


def _is_distill_step(row: dict[str, float]) -> bool:
    return (int(row["step"]) + 1) % 4 == 0  # TeacherDistillation(every_n_batches=4)


def test_rows_hold_only_what_their_step_measured(tmp_path, student, shards, cache):  # noqa: F811
    _, spec = student
    rows = _fit_logged(tmp_path, shards, spec, cache, steps=9, every=1)
    assert [int(r["step"]) for r in rows] == list(range(9))
    for row in rows:
        distill_keys = [k for k in row if k.startswith("distill/") or k == "train/distill_loss"]
        if _is_distill_step(row):
            assert "train/loss" not in row, row
            assert "distill/win_rate/ground_truth" in row and "train/distill_loss" in row
        else:
            assert "train/loss" in row and not distill_keys, row
        assert {"train/lr", "train/grad_norm", "trainer/tokens_seen"} <= set(row)
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    assert len(set(losses)) == len(losses) == 7  # no LM loss repeated into another row


def test_report_counts_the_steps_that_ran(tmp_path, student, shards, cache):  # noqa: F811
    # logged every 2nd step: rows 1, 3, 5, 7, 9, 11; of these 3, 7 and 11 are distillation steps
    _, spec = student
    rows = _fit_logged(tmp_path, shards, spec, cache, steps=12, every=2)
    logged = [int(r["step"]) for r in rows]
    assert logged == [1, 3, 5, 7, 9, 11]
    items = dict(training_section(rows, "metrics.csv")["table"]["rows"])
    assert items["LM steps logged (rows with train/loss)"] == 3
    assert items["distillation steps logged (rows with train/distill_loss)"] == 3
    table = distill_section(rows, "metrics.csv")["table"]
    assert {r[0]: r[-1] for r in table["rows"]} == {"ground_truth": 3, "lk": 3}
