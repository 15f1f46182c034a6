"""``ConsoleLogger``: the lines a cluster run prints, from the metrics every logger receives."""

from __future__ import annotations

import re

import pytest

from loki import console_metrics
from loki.config import LokiConfig
from loki.console_metrics import ConsoleLogger, count, duration, start_line

THROUGHPUT = {"train/time": 12.0, "train/device/items_per_sec": 54_912.0,
              "train/device/mfu": 0.4781, "train/items_per_sec": 439_296.0}
STEP = {"trainer/tokens_seen": 2.52e9, "train/lr": 2.95e-4, "train/grad_norm": 0.3141,
        "train/micro_batches": 4.0, "batch/sequences": 512.0, "train/loss": 2.87412, "epoch": 0}


@pytest.fixture
def clock(monkeypatch):
    """The logger's monotonic clock, set by the test."""
    now = [1000.0]
    monkeypatch.setattr(console_metrics.time, "monotonic", lambda: now[0])
    return now


def test_the_start_line_names_model_processes_budget_and_start():
    config = LokiConfig.from_name("loki-1.4b", vocab_size=32_000)
    assert start_line("loki-1.4b", config, 32, "cuda", "FSDP2", 500 * 10**9, None) == \
        "fit: loki-1.4b (24 layers x 2048, 1.4B parameters) on 32 GPUs (FSDP2); until 500B " \
        "tokens; a new run"
    assert start_line("Loki", config, 1, "cuda", "", None, 12_000) == \
        "fit: Loki (24 layers x 2048, 1.4B parameters) on 1 GPU; from step 12,000"
    assert start_line("Loki", config, 2, "cpu", "DDP", None, 0).startswith(
        "fit: Loki (24 layers x 2048, 1.4B parameters) on 2 CPU processes (DDP); from step 0")


def test_number_formats():
    assert [count(n) for n in (950, 12_345, 2.52e9, 1e12, 512e9)] == \
        ["950", "12.3K", "2.52B", "1T", "512B"]
    assert [duration(s) for s in (45, 725, 3 * 3600 + 720, 11 * 86400 + 4 * 3600 + 59)] == \
        ["45s", "12m05s", "3h12m", "11d04h"]


def test_a_training_line_carries_the_step_throughput_and_eta(clock):
    logger = ConsoleLogger()
    logger._device = "GPU"  # as on a CUDA machine ("device" elsewhere)
    logger.total_tokens = 500_000_000_000
    assert logger.line(THROUGHPUT, 1199) is None  # the throughput callback logs first
    clock[0] += 3 * 3600 + 12 * 60
    first = logger.line(STEP, 1199)
    assert first == ("step 1,200 | 2.52B tokens | loss 2.8741 | lr 2.95e-04 | grad 0.314 | "
                     "batch 512 | 54.9K tok/s/GPU | MFU 47.8% | 3h12m")  # one line: no rate yet
    clock[0] += 100.0  # 100 s for 10 steps of 1M tokens: 10^5 tokens/s
    line = logger.line({**STEP, "trainer/tokens_seen": 2.52e9 + 1e7}, 1209)
    remaining = 500e9 - (2.52e9 + 1e7)
    assert line.startswith("step 1,210 | 2.53B tokens | loss 2.8741")
    assert line.endswith(f"3h13m, ETA {duration(remaining / 1e5)}")
    assert duration(remaining / 1e5) == "57d13h"


def test_the_eta_is_the_budget_that_ends_the_run_first(clock):
    logger = ConsoleLogger()
    logger.total_steps = 260
    line = {"train/loss": 3.0, "trainer/tokens_seen": 20_480.0}
    assert logger.line(line, 9).endswith("| 0s")
    clock[0] += 10.0  # 10 steps and 20,480 tokens in 10 s
    assert logger.line({**line, "trainer/tokens_seen": 40_960.0}, 19).endswith(
        "| 10s, ETA 4m00s")  # 240 steps left at 1 step/s
    logger.total_tokens = 100_000  # 59,040 tokens left at 2,048 tokens/s: sooner
    clock[0] += 10.0
    assert logger.line({**line, "trainer/tokens_seen": 61_440.0}, 29).endswith(
        f"| 20s, ETA {duration((100_000 - 61_440) / 2048)}")
    clock[0] += 10.0
    assert logger.line({**line, "trainer/tokens_seen": 40_960.0}, 19).endswith("| 30s")  # went back


def test_distillation_validation_and_rollback_lines(clock):
    logger = ConsoleLogger()
    distill = {k: v for k, v in STEP.items() if k != "train/loss"}
    distill["train/distill_loss"] = 2.3282
    assert logger.line(distill, 3).startswith("step 4 | 2.52B tokens | distill loss 2.3282 | lr")
    assert logger.line({"val/loss": 2.9137, "val/ppl": 18.42, "epoch": 0}, 1999) == \
        "step 2,000 | val loss 2.914 | val ppl 18.42"
    assert logger.line({"validate/device/items_per_sec": 1.0}, 1999) is None
    logger.line(STEP, 13)
    assert logger._rate
    rollback = {"rollback/count": 1.0, "rollback/spike_step": 14.0, "rollback/target_step": 10.0,
                "rollback/spike_loss": float("nan"), "trainer/tokens_seen": 5120.0}
    assert logger.line(rollback, 13) == \
        "rollback 1: loss spike at step 14 (loss nan), back to step 10 and reseeded"
    assert not logger._rate  # the token clock went back: the ETA's rate starts over
    nan = logger.line({**STEP, "train/loss": float("nan"), "train/grad_norm": float("nan")}, 13)
    assert "| loss nan |" in nan and "| grad nan |" in nan


def test_what_is_not_a_number_is_left_out(clock):
    logger = ConsoleLogger()
    line = logger.line({"train/loss": 3.0, "note": "text", "train/lr": None}, 0)
    assert line == "step 1 | loss 3.0000 | 0s"


def test_loki_fit_prints_a_line_per_logging_step_with_the_eta(tmp_path, monkeypatch, capfd):
    """A real ``loki fit`` with the logger added: its lines reach the terminal (the quiet
    console's), and LokiCLI hands it data.max_tokens for the ETA; ``loki validate`` drops it."""
    from loki import cli
    from tests.helpers.fit_run import write_run

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LOKI_LOG_DIR")  # the default place, runs/logs
    run = write_run(tmp_path, max_steps=8, data_extra="  max_tokens: 1M\n")
    cli.main(["fit", "--config", str(run),
              "--trainer.logger+=loki.console_metrics.ConsoleLogger"])
    out, err = capfd.readouterr()
    lines = out.splitlines()
    assert lines[0] == ("fit: tiny (2 layers x 64, 140K parameters) on 1 CPU process; until 1M "
                        "tokens; a new run")
    training = [s for s in lines if re.match(r"step \d+ \| [\d.]+K? tokens \| loss ", s)]
    assert [s.split(" |")[0] for s in training] == ["step 2", "step 4", "step 6", "step 8"]
    assert all(" | lr " in s and " | grad " in s for s in training)
    assert "ETA" in training[-1]
    val = [s for s in lines if " | val loss " in s]
    assert len(val) == 2 and all(re.fullmatch(rf"step {n} \| val loss [\d.]+ \| val ppl [\d.]+", s)
                                 for n, s in zip((4, 8), val, strict=True)), val
    assert "library logs and warnings: runs/logs/fit.log" in out
    cli.main(["fit", "--config", str(run), "--trainer.max_steps", "10",
              "--ckpt_path", "run/checkpoints/last.ckpt"])
    # last.ckpt is the step-6 checkpoint (every 3 steps)
    assert capfd.readouterr().out.splitlines()[0].endswith("; until 1M tokens; from step 6")
    # loki validate says its scores in its own closing line, not again as a fit's console line
    cli.main(["validate", "--config", str(run), "--ckpt_path", "run/checkpoints/last.ckpt",
              "--trainer.logger+=loki.console_metrics.ConsoleLogger"])
    out, _ = capfd.readouterr()
    assert not re.search(r"^step ", out, re.M) and "validate run/checkpoints/last.ckpt: val/loss" \
        in out


def test_a_rollback_line_follows_the_rolled_back_steps_own_line(clock, monkeypatch):
    """The rollback logs at once, before Lightning logs the step's metrics at the same step:
    the console shows the step, then the rollback; a rollback on a step that logs nothing
    comes before the next line, and the end of the run prints one still held."""
    shown = []
    monkeypatch.setattr(console_metrics, "say", shown.append)
    logger = ConsoleLogger()
    rollback = {"rollback/count": 1.0, "rollback/spike_step": 14.0, "rollback/target_step": 10.0,
                "rollback/spike_loss": 7.9}
    logger.log_metrics(rollback, 13)
    assert shown == []
    logger.log_metrics({**STEP, "train/loss": 7.9}, 13)
    logger.log_metrics({**STEP, "train/loss": 2.9}, 11)
    assert [s[:8] for s in shown] == ["step 14 ", "rollback", "step 12 "]
    shown.clear()
    logger.log_metrics({**rollback, "rollback/count": 2.0, "rollback/spike_step": 15.0}, 14)
    logger.log_metrics({**STEP, "train/loss": 2.9}, 11)
    assert [s[:10] for s in shown] == ["rollback 2", "step 12 | "]
    shown.clear()
    logger.log_metrics({**rollback, "rollback/count": 3.0}, 13)
    logger.finalize("failed")
    assert [s[:10] for s in shown] == ["rollback 3"]
