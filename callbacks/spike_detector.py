"""``SpikeDetector``: is this training loss a spike?

The detector is fed one loss per step and keeps a trailing window of the last ``window`` normal
losses. A non-finite loss is always a spike. Otherwise, once ``warmup_steps`` normal losses have
been seen, a loss is abnormal when it is above ``mean + sigma * std`` of the window or above
``ratio * mean``, and in either case by at least ``min_increase`` over the mean. Abnormal losses
never enter the window. ``persistence`` consecutive abnormal losses make a spike; a normal loss
in between starts the count again. ``state_dict`` holds the window, the warm-up count and the
current run of abnormal losses.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

from loki.errors import LokiError


class SpikeDetector:
    """Trailing statistics of normal LM losses and the spike rule (no Lightning in here)."""

    def __init__(self, sigma: float = 6.0, window: int = 128, ratio: float | None = 2.0,
                 min_increase: float = 0.1, warmup_steps: int = 100,
                 persistence: int = 1) -> None:
        if window < 2 or persistence < 1 or warmup_steps < 0:
            raise LokiError("spike detection needs window >= 2, persistence >= 1, "
                            "warmup_steps >= 0")
        self.sigma, self.ratio, self.min_increase = sigma, ratio, min_increase
        self.warmup_steps, self.persistence = warmup_steps, persistence
        self.losses: deque[float] = deque(maxlen=window)
        self.seen = 0  # normal LM losses so far (the warm-up counts these)
        self.abnormal: list[float] = []  # the current run of abnormal losses

    def threshold(self) -> float | None:
        """The loss above which a step is abnormal (None during warm-up)."""
        if self.seen < max(self.warmup_steps, 2) or len(self.losses) < 2:
            return None
        values = np.asarray(self.losses, dtype=np.float64)
        mean = float(values.mean())
        limits = [mean + self.sigma * float(values.std())]
        if self.ratio is not None:
            limits.append(self.ratio * mean)
        return max(min(limits), mean + self.min_increase)

    def observe(self, loss: float) -> tuple[str, str]:
        """("normal" | "abnormal" | "spike", reason) for the next LM loss."""
        if not math.isfinite(loss):
            self.abnormal.append(loss)
            return "spike", f"non-finite loss {loss}"
        limit = self.threshold()
        if limit is None or loss <= limit:
            self.losses.append(loss)
            self.seen += 1
            self.abnormal.clear()
            return "normal", ""
        self.abnormal.append(loss)
        reason = (f"loss {loss:.4g} > {limit:.4g} (mean {np.mean(self.losses):.4g} over "
                  f"{len(self.losses)} steps) for {len(self.abnormal)} step(s)")
        return ("spike" if len(self.abnormal) >= self.persistence else "abnormal"), reason

    @property
    def calm(self) -> bool:
        return not self.abnormal

    def state_dict(self) -> dict[str, Any]:
        return {"losses": list(self.losses), "seen": self.seen, "abnormal": list(self.abnormal)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.losses.clear()
        self.losses.extend(state["losses"])
        self.seen, self.abnormal = int(state["seen"]), list(state["abnormal"])
