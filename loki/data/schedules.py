"""Schedules counted in tokens: batch-size warmup and the source mixture.

Both are pure functions of the global number of tokens seen, so they restart where they stopped
after a resume (the stream's state holds the token count) and agree on every rank.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from loki.errors import LokiError

_SUFFIX = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}


def parse_tokens(value: int | float | str) -> int:
    """``50B`` -> 50_000_000_000; also ``1.5M``, ``250_000``, plain numbers."""
    if isinstance(value, int | float):
        return int(value)
    m = re.fullmatch(r"\s*([0-9_]*\.?[0-9_]+(?:e[0-9]+)?)\s*([KMBGT]?)\s*", str(value), re.I)
    if not m:
        raise LokiError(f"cannot read token count {value!r}; write e.g. 50B, 1.5M or 250000")
    return int(float(m.group(1).replace("_", "")) * _SUFFIX[m.group(2).upper()])


def parse_points(spec: str, what: str) -> list[tuple[int, float]]:
    """``"0:256, 10B:512, 50B:1024"`` -> [(0, 256.0), (10**10, 512.0), (5 * 10**10, 1024.0)]."""
    points = []
    for part in str(spec).split(","):
        if ":" not in part:
            raise LokiError(f"{what}: {part.strip()!r} is not TOKENS:VALUE (in {spec!r})")
        tokens, value = part.split(":", 1)
        try:
            points.append((parse_tokens(tokens), float(value)))
        except ValueError as err:
            raise LokiError(f"{what}: bad value in {part.strip()!r}") from err
    points.sort()
    if not points or points[0][0] != 0:
        raise LokiError(f"{what}: the first point must be at 0 tokens (got {spec!r})")
    return points


def _value_at(points: list[tuple[int, float]], tokens: int) -> float:
    value = points[0][1]
    for at, v in points:
        if tokens >= at:
            value = v
    return value


@dataclass
class BatchSizeWarmup:
    """Global batch size (in sequences) as a function of tokens seen.

    The micro-batch stays fixed and the number of accumulated micro-batches grows, so memory is
    flat: every global batch must be a multiple of ``micro_batch_size * world_size``. Either a
    ramp (``start`` -> ``target`` over ``over_tokens``, in whole accumulation steps, reaching
    ``target`` exactly at ``over_tokens``) or explicit ``points``; neither = constant ``target``
    (or one micro-batch per rank when that is unset too).
    """

    start: int | None = None
    """Global batch in sequences at 0 tokens (ramp form)."""
    target: int | None = None
    """Global batch in sequences after the warmup (ramp form), or the constant batch size."""
    over_tokens: int | str = 0
    """Tokens over which the ramp runs, e.g. ``50B`` (the paper)."""
    points: str | None = None
    """Explicit steps ``"0:256, 10B:512, 50B:1024"``: batch from that token count on."""

    def __post_init__(self) -> None:
        if self.points is not None and (self.start is not None or self.over_tokens):
            raise LokiError("batch size warmup: give either points or start/target/over_tokens")
        self._points = parse_points(self.points, "batch size points") if self.points else None
        self._over = parse_tokens(self.over_tokens)
        if self._over and (self.start is None or self.target is None):
            raise LokiError("batch size warmup: a ramp needs start, target and over_tokens")

    def global_batch(self, tokens: int, unit: int) -> int:
        """Global batch in sequences at ``tokens`` seen; ``unit`` = micro batch * world size."""
        if self._points is not None:
            return int(_value_at(self._points, tokens))
        target = self.target if self.target is not None else unit
        if not self._over or tokens >= self._over:
            return target
        a0, a1 = self.start // unit, target // unit
        return unit * (a0 + (a1 - a0) * tokens // self._over)

    def accumulation(self, tokens: int, micro_batch: int, world_size: int) -> int:
        """Micro-batches per rank per optimizer step at ``tokens`` seen."""
        return self.global_batch(tokens, micro_batch * world_size) // (micro_batch * world_size)

    def check(self, micro_batch: int, world_size: int) -> None:
        """Every configured size must split into whole micro-batches on every rank."""
        unit = micro_batch * world_size
        sizes = [v for _, v in self._points] if self._points else [self.start, self.target]
        for size in sizes:
            if size is not None and (size < unit or size % unit):
                raise LokiError(
                    f"global batch {size:g} is not a multiple of micro_batch_size {micro_batch} x "
                    f"world size {world_size} = {unit}; change the batch size warmup")


class MixtureSchedule:
    """Sampling weights of the sources as a function of tokens seen.

    ``weights`` maps a source to a constant weight or to points ``"0:0.1, 20B:0"`` (piecewise
    constant). Weights are normalized at each step; sources missing from ``weights`` get 0.
    """

    def __init__(self, weights: dict[str, float | str], sources: list[str]) -> None:
        unknown = set(weights) - set(sources)
        if unknown:
            raise LokiError(f"mixture names unknown sources {sorted(unknown)}; "
                            f"the data sources are {sources}")
        self.sources = list(sources)
        self._points = {
            name: (parse_points(w, f"mixture weight of {name}") if isinstance(w, str)
                   else [(0, float(w))])
            for name, w in weights.items()}
        for name, pts in self._points.items():
            if any(v < 0 for _, v in pts):
                raise LokiError(f"mixture weight of {name} is negative")

    def weights(self, tokens: int) -> list[float]:
        """Normalized weights in ``sources`` order at ``tokens`` seen."""
        raw = [(_value_at(self._points[s], tokens) if s in self._points else 0.0)
               for s in self.sources]
        total = sum(raw)
        if total <= 0:
            raise LokiError(f"all mixture weights are 0 at {tokens} tokens")
        return [w / total for w in raw]
