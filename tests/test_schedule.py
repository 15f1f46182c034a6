import math

import pytest

from loki.schedule import TokenCosineSchedule


def test_warmup_then_cosine_to_floor_in_tokens():
    s = TokenCosineSchedule(warmup_tokens=1000, decay_tokens=11_000, min_lr_ratio=0.1)
    assert s.factor(0) == 0.0
    assert s.factor(500) == pytest.approx(0.5)
    assert s.factor(1000) == pytest.approx(1.0)
    # halfway through the cosine: floor + half the range
    assert s.factor(6000) == pytest.approx(0.1 + 0.9 * 0.5)
    assert s.factor(11_000) == pytest.approx(0.1)
    assert s.factor(50_000) == pytest.approx(0.1)
    # a point in tokens gives the same LR whatever batch sizes led there
    assert s.factor(3000) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.2)))


def test_constant_after_warmup_without_decay():
    s = TokenCosineSchedule(warmup_tokens=10)
    assert s.factor(10**9) == 1.0


def test_rejects_bad_values():
    with pytest.raises(ValueError, match="decay_tokens"):
        TokenCosineSchedule(warmup_tokens=10, decay_tokens=5)
    with pytest.raises(ValueError, match="min_lr_ratio"):
        TokenCosineSchedule(min_lr_ratio=2)


def test_token_counts_accept_suffixes():
    s = TokenCosineSchedule(warmup_tokens="1B", decay_tokens="500B")
    assert (s.warmup_tokens, s.decay_tokens) == (10**9, 5 * 10**11)
