"""WandbDashboard: offline wandb run with tokens as x-axis and redacted config; no-op elsewhere."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.loggers import CSVLogger

from callbacks.wandb_dashboard import REDACTED, TOKENS, WandbDashboard, is_secret, redact
from loki.module import LokiLM
from tests.helpers.synthetic import SyntheticSteps

SECRET = "sk-test0123456789abcdef"


def _fit(tmp_path: Path, loggers: list) -> LokiLM:
    module = LokiLM("tiny", vocab_size=512, config_overrides={"n_layer": 1},
                    tokenizer=None)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_steps=4, logger=loggers,
        callbacks=[WandbDashboard(extra_config={"teacher": {"api_key": SECRET, "model": "m"}})],
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        default_root_dir=tmp_path, val_check_interval=2, limit_val_batches=1, log_every_n_steps=1,
    )
    trainer.fit(module, SyntheticSteps(n_steps=4, accum=[1, 2]))
    return module


def wandb_records(path: Path):
    """Protobuf records of an offline ``run-*.wandb`` file (LevelDB log framing: 32 KiB blocks,
    7-byte record headers crc32/length/type; wandb 0.31 ships no reader for it)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        buf += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST chunk
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            yield record


def test_secret_rule() -> None:
    for key in ("api_key", "OPENAI_API_KEY", "HF_TOKEN", "token", "password", "aws_secret"):
        assert is_secret(key), key
    for key in ("tokenizer", "tokens_seen", "max_new_tokens", "vocab_size", "top_k"):
        assert not is_secret(key), key
    cfg = {"a": {"api_key": "x", "keep": 1}, "b": [{"HF_TOKEN": "y"}], "c": SECRET}
    assert redact(cfg) == {"a": {"api_key": REDACTED, "keep": 1},
                           "b": [{"HF_TOKEN": REDACTED}], "c": REDACTED}


def test_offline_run_holds_defined_metrics(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("wandb")
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    import wandb

    # system stats, code and git capture are slow and irrelevant here
    settings = wandb.Settings(x_disable_stats=True, x_disable_meta=True, disable_code=True,
                              disable_git=True, console="off")
    logger = WandbLogger(offline=True, save_dir=str(tmp_path), project="loki-test",
                         settings=settings)
    csv = CSVLogger(tmp_path, name="csv")
    try:
        _fit(tmp_path, [logger, csv])
    finally:
        logger.experiment.finish()
    runs = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, runs
    for _ in range(300):  # wandb-core writes the file in the background; wait for its end
        kinds = [r.WhichOneof("record_type") for r in wandb_records(runs[0])]
        if "exit" in kinds:
            break
        time.sleep(0.1)
    assert "exit" in kinds, kinds[-5:]
    metrics, history, config = {}, [], {}
    for r in wandb_records(runs[0]):
        kind = r.WhichOneof("record_type")
        if kind == "metric":
            metrics[r.metric.name or r.metric.glob_name] = r.metric
        elif kind == "history":
            history.append({i.key or "/".join(i.nested_key): i.value_json for i in r.history.item})
        elif kind == "config":
            config.update({u.key or "/".join(u.nested_key): u.value_json
                           for u in r.config.update})
    for family in ("train/*", "val/*", "lr/*", "batch/*", "throughput/*", "distill/*",
                   "rollback/*", "eval/*", "train/loss", "val/loss"):
        assert metrics[family].step_metric == TOKENS, family
    assert metrics["train/loss"].summary.min
    train_rows = [h for h in history if "train/loss" in h]
    assert len(train_rows) == 4 and all(TOKENS in h and "batch/sequences" in h for h in train_rows)
    # the step batches grow from 1 to 2 micro-batches of 4 sequences
    assert [float(h["batch/sequences"]) for h in train_rows] == [4.0, 8.0, 8.0, 8.0]
    assert any("val/loss" in h for h in history)
    assert '"vocab_size":512' in config["loki"] and SECRET not in config["loki"]
    assert REDACTED in config["loki"]
    # the CSV logger beside it got the same extra metrics
    assert "batch/sequences" in (tmp_path / "csv" / "version_0" / "metrics.csv").read_text()


def test_noop_without_wandb_logger(tmp_path: Path) -> None:
    csv = CSVLogger(tmp_path, name="csv")
    _fit(tmp_path, [csv])
    header = (tmp_path / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[0]
    assert "train/loss" in header and TOKENS in header
    assert "batch/" not in header and "lr/" not in header
    assert not (tmp_path / "wandb").exists()
