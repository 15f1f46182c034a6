"""How a loss-spike rollback is made known (used by ``LossSpikeRollback``).

At each rollback: a warning in the log; ``rollback/count``, ``rollback/spike_step``,
``rollback/target_step`` and ``rollback/spike_loss`` written to the loggers at once (not held for
``log_every_n_steps``); one JSON line per rollback in ``<dirpath>/rollback-events.jsonl`` (for
reports); on wandb also a ``rollback/event`` entry and an alert.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import lightning as L

from loki.redact import redact
from loki.step_logging import host_scalar

log = logging.getLogger(__name__)


def _json_safe(obj: Any) -> Any:
    """``obj`` with NaN and infinities as None, so each event line is valid JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def report_rollback(trainer: L.Trainer, pl_module: L.LightningModule, event: dict[str, Any],
                    dirpath: str) -> None:
    """Log, record and announce one rollback ``event`` (the dict kept in the callback's history;
    ``event["rollback"]`` is the rollback count)."""
    count = event["rollback"]
    n = len(event["skipped_samples"])
    log.warning(
        "loss spike at step %d (%s): rollback %d to step %d (%s), seed %d, %d samples "
        "skipped: %s", event["spike_step"], event["reason"], event["rollback"],
        event["target_step"], event["target"], event["seed"], n,
        event["skipped_samples"][:32])
    pl_module.log("rollback/count", host_scalar(count), on_step=True, reduce_fx="max")
    if not trainer.is_global_zero:
        return
    # Straight to the loggers: a rollback step need not be a log_every_n_steps step.
    metrics = {"rollback/count": float(count),
               "rollback/spike_step": float(event["spike_step"]),
               "rollback/target_step": float(event["target_step"]),
               "rollback/spike_loss": math.nan if event["loss"] is None else event["loss"],
               "trainer/tokens_seen": float(event["spike_tokens"])}
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=event["log_step"])
    os.makedirs(dirpath, exist_ok=True)
    line = json.dumps(redact(_json_safe(event)), allow_nan=False)  # NaN is not JSON: null
    with open(Path(dirpath) / "rollback-events.jsonl", "a") as f:
        f.write(line + "\n")
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger":
            wandb = logger.experiment
            wandb.log({"rollback/event": {k: v for k, v in event.items()
                                          if k != "skipped_samples"}}, commit=False)
            wandb.alert(title="loss spike rollback", text=json.dumps(event)[:1000])
