"""Learning-rate schedule counted in tokens, since the batch size changes during training."""

from __future__ import annotations

import math
from dataclasses import dataclass

from loki.data.schedules import parse_tokens


@dataclass
class TokenCosineSchedule:
    """Linear warmup from 0 to the peak LR over ``warmup_tokens``, then a cosine down to
    ``min_lr_ratio * peak`` at ``decay_tokens``, flat after that."""

    warmup_tokens: int | str = 0
    """Tokens of linear warmup (an int, or e.g. ``"1B"``, ``"250M"``)."""
    decay_tokens: int | str | None = None
    """Token count where the cosine reaches its floor; None keeps the peak LR after warmup."""
    min_lr_ratio: float = 0.1
    """Floor of the cosine as a fraction of the peak LR."""

    def __post_init__(self) -> None:
        self.warmup_tokens = parse_tokens(self.warmup_tokens)
        if self.decay_tokens is not None:
            self.decay_tokens = parse_tokens(self.decay_tokens)
        if self.warmup_tokens < 0:
            raise ValueError(f"warmup_tokens must be >= 0, got {self.warmup_tokens}")
        if self.decay_tokens is not None and self.decay_tokens <= self.warmup_tokens:
            raise ValueError(
                f"decay_tokens ({self.decay_tokens}) must exceed warmup_tokens "
                f"({self.warmup_tokens})"
            )
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")

    def factor(self, tokens: int) -> float:
        """Multiplier of the peak LR after ``tokens`` tokens."""
        if tokens < self.warmup_tokens:
            return tokens / self.warmup_tokens
        if self.decay_tokens is None:
            return 1.0
        progress = min(1.0, (tokens - self.warmup_tokens) / (self.decay_tokens - self.warmup_tokens))
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine
