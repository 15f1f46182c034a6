"""``ConsoleLogger``: a cluster run's progress as one line per logging interval on the console.

A long ``loki fit`` on a cluster is watched through its scheduler's output file as much as through
wandb (and only through it on nodes without internet). There a tqdm bar is noise (every refresh a
carriage return in a file), and inside the quiet console (``loki.console``) Lightning's bar goes to
the library log anyway. This logger receives what every other logger receives, already turned into
numbers by Lightning once per ``log_every_n_steps`` (so it adds no read from the GPU), and writes on
rank 0, through :func:`loki.console.say`:

    step 1,200 | 2.52B tokens | loss 2.8741 | lr 2.95e-04 | grad 0.314 | batch 512 | 54.9K tok/s/GPU | MFU 47.8% | 1h36m, ETA 13d02h

and a line for each validation and each loss-spike rollback. The time is since this process
started (a resumed run counts anew). The ETA is the time left until the token or the step budget
runs out, whichever comes first, at the rate of the last few lines (``LokiCLI`` hands over
``data.max_tokens`` and ``trainer.max_steps``).
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any

import torch
from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from loki.console import say

RATE_LINES = 10  # the ETA's rate spans this many logged lines


def count(n: float) -> str:
    """A count the way it is read: 950, 12.3K, 2.52B, 1T."""
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}" if n / size < 100 else f"{n / size:.0f}{unit}"
    return f"{n:.0f}"


def duration(seconds: float) -> str:
    """``45s``, ``12m05s``, ``3h12m``, ``11d04h``."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def start_line(name: str, config: Any, world_size: int, device: str, strategy: str,
               max_tokens: int | None, resumed_step: int | None) -> str:
    """The fit's first console line on rank 0, said before the data check, the sharding and the
    compilation (minutes at scale) so that the wait has a context: the model, the processes,
    the token budget and where the run starts. ``config`` is the ``LokiConfig``."""
    unit = "GPU" if device == "cuda" else f"{device.upper()} process"
    plural = "" if world_size == 1 else "es" if unit.endswith("process") else "s"
    line = (f"fit: {name} ({config.n_layer} layers x {config.n_embd}, "
            f"{count(config.num_params())} parameters) on {world_size} {unit}{plural}"
            + (f" ({strategy})" if strategy else ""))
    if max_tokens:
        line += f"; until {count(max_tokens)} tokens"
    return line + ("; a new run" if resumed_step is None else f"; from step {resumed_step:,}")


def _number(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value


class ConsoleLogger(Logger):
    """One console line per logged training step, validation and rollback (rank 0 only)."""

    def __init__(self) -> None:
        super().__init__()
        # the run's budgets, for the ETA: set by LokiCLI from data.max_tokens, trainer.max_steps
        self.total_tokens: int | None = None
        self.total_steps: int | None = None
        self._start = time.monotonic()
        self._rate: deque[tuple[float, float, int]] = deque(maxlen=RATE_LINES)  # time, tokens, step
        self._throughput: dict[str, float] = {}
        self._held: tuple[int | None, str] | None = None  # a rollback's line (see ``lines``)
        self._device = "GPU" if torch.cuda.is_available() else "device"  # tok/s per what

    @property
    def name(self) -> str:
        return "console"

    @property
    def version(self) -> str:
        return ""

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass  # the run's config is in config.yaml and on wandb

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        for line in self.lines(metrics, step):
            say(line)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._held is not None:
            say(self._held[1])
            self._held = None

    def lines(self, metrics: dict[str, float], step: int | None) -> list[str]:
        """The console lines of one ``log_metrics`` call. A rollback's line is held for the next
        line (at most one logging interval): the rolled-back step's own metrics are logged after
        it, at the same step, and read better before it."""
        line = self.line(metrics, step)
        if line is None:
            return []
        if "rollback/spike_step" in metrics:
            self._held = (step, line)
            return []
        held, self._held = self._held, None
        if held is None:
            return [line]
        same_step = held[0] == step and not any(k.startswith("val/") for k in metrics)
        return [line, held[1]] if same_step else [held[1], line]

    def line(self, metrics: dict[str, float], step: int | None) -> str | None:
        """The console line for one ``log_metrics`` call, or None for metrics shown later (the
        throughput callback logs just before the step's own metrics) or not at all."""
        m = {k: v for k, v in ((k, _number(v)) for k, v in metrics.items()) if v is not None}
        # Steps count the optimizer steps done, as checkpoint names, rollback events and
        # ``trainer.global_step`` do; Lightning logs a step's metrics at that count minus one.
        at = "step ?" if step is None else f"step {step + 1:,}"
        if "rollback/spike_step" in m:
            loss = m.get("rollback/spike_loss", math.nan)
            self._rate.clear()  # the token clock goes back with the weights
            return (f"rollback {m.get('rollback/count', 0):.0f}: loss spike at step "
                    f"{m['rollback/spike_step']:,.0f} (loss {loss:.4g}), back to step "
                    f"{m.get('rollback/target_step', math.nan):,.0f} and reseeded")
        val = {k: v for k, v in m.items() if k.startswith("val/")}  # LokiLM's (throughput's
        # own validation figures are "validate/...")
        if val:
            return f"{at} | " + " | ".join(f"{k.replace('/', ' ')} {v:.4g}"
                                           for k, v in sorted(val.items()))
        if any(k.startswith("train/device/") for k in m):
            self._throughput = {k: v for k, v in m.items() if k.startswith("train/device/")}
        losses = {k: v for k, v in m.items()
                  if k.startswith("train/") and k.endswith("loss") and "/device/" not in k}
        if not losses:
            return None
        parts = [at]
        tokens = m.get("trainer/tokens_seen")
        if tokens is not None:
            parts.append(f"{count(tokens)} tokens")
        for key, value in sorted(losses.items(), key=lambda kv: kv[0] != "train/loss"):
            label = key[len("train/"):].replace("_", " ")
            parts.append(f"{label} {value:.4f}" if math.isfinite(value) else f"{label} {value}")
        if "train/lr" in m:
            parts.append(f"lr {m['train/lr']:.2e}")
        if "train/grad_norm" in m:
            parts.append(f"grad {m['train/grad_norm']:.3g}")
        if "batch/sequences" in m:
            parts.append(f"batch {m['batch/sequences']:,.0f}")
        per_device = self._throughput.get("train/device/items_per_sec")
        if per_device is not None:
            parts.append(f"{count(per_device)} tok/s/{self._device}")
        mfu = self._throughput.get("train/device/mfu")
        if mfu is not None:
            parts.append(f"MFU {100 * mfu:.1f}%")
        parts.append(self._clock(tokens, step))
        return " | ".join(parts)

    def _clock(self, tokens: float | None, step: int | None) -> str:
        """Time since the logger started, and the ETA: the remaining tokens or steps, whichever
        budget ends the run first, at the rate of the last ``RATE_LINES`` lines."""
        now = time.monotonic()
        text = duration(now - self._start)
        done = -1 if step is None else step + 1
        if self._rate and (done < self._rate[-1][2] or (tokens or 0) < self._rate[-1][1]):
            self._rate.clear()  # a rollback: the clocks went back
        self._rate.append((now, tokens or 0.0, done))
        (t0, n0, s0), (t1, n1, s1) = self._rate[0], self._rate[-1]
        if t1 <= t0:
            return text
        etas = []
        if self.total_tokens and n1 > n0:
            etas.append(max(0.0, self.total_tokens - n1) * (t1 - t0) / (n1 - n0))
        if self.total_steps and s1 > s0 >= 0:
            etas.append(max(0, self.total_steps - s1) * (t1 - t0) / (s1 - s0))
        return text + (f", ETA {duration(min(etas))}" if etas else "")
