"""Batch-size warmup and mixture schedules, counted in tokens."""

from __future__ import annotations

import pytest

from loki.data.schedules import BatchSizeWarmup, MixtureSchedule, parse_points, parse_tokens
from loki.errors import LokiError


def test_token_counts_parse():
    assert parse_tokens("50B") == 50 * 10**9 and parse_tokens("1.5M") == 1_500_000
    assert parse_tokens("250_000") == 250_000 and parse_tokens(7) == 7
    with pytest.raises(LokiError, match="cannot read token count"):
        parse_tokens("ten")
    with pytest.raises(LokiError, match="first point must be at 0"):
        parse_points("1B:256", "x")


def test_points_give_exactly_the_configured_sizes():
    w = BatchSizeWarmup(points="0:256, 10B:512, 50B:1024")
    unit = 8 * 4  # micro-batch 8 on 4 ranks
    assert w.global_batch(0, unit) == 256 and w.global_batch(10**10 - 1, unit) == 256
    assert w.global_batch(10**10, unit) == 512 and w.global_batch(5 * 10**10, unit) == 1024
    assert w.accumulation(5 * 10**10, 8, 4) == 32
    w.check(8, 4)
    with pytest.raises(LokiError, match="global batch 256 is not a multiple of .* 24"):
        w.check(8, 3)


def test_ramp_is_stepwise_in_whole_micro_batches_and_ends_on_target():
    w = BatchSizeWarmup(start=64, target=1024, over_tokens="50B")
    unit = 64
    sizes = [w.global_batch(t, unit) for t in range(0, 60 * 10**9, 10**8)]
    assert sizes[0] == 64 and w.global_batch(50 * 10**9, unit) == 1024
    assert w.global_batch(50 * 10**9 - 1, unit) == 960  # last step before the target
    assert all(s % unit == 0 for s in sizes) and sizes == sorted(sizes)
    assert len(set(sizes)) == 16  # 1, 2, ..., 16 micro-batches
    assert BatchSizeWarmup().global_batch(10**12, 16) == 16  # default: no accumulation
    with pytest.raises(LokiError, match="either points or"):
        BatchSizeWarmup(start=1, points="0:1")


def test_mixture_weights_change_with_tokens():
    m = MixtureSchedule({"web": 1.0, "synthetic": "0:0.25, 1M:0"}, ["web", "synthetic"])
    assert m.weights(0) == [0.8, 0.2] and m.weights(10**6) == [1.0, 0.0]
    with pytest.raises(LokiError, match="unknown sources"):
        MixtureSchedule({"code": 1.0}, ["web"])
    with pytest.raises(LokiError, match="all mixture weights are 0"):
        MixtureSchedule({"web": "0:1, 5:0"}, ["web"]).weights(9)
