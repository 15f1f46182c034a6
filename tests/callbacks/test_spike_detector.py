"""SpikeDetector: the loss-spike rule on hand-made loss sequences."""

from __future__ import annotations

from callbacks.spike_detector import SpikeDetector


def test_detector_rules():
    d = SpikeDetector(sigma=3.0, window=8, ratio=2.0, min_increase=0.1, warmup_steps=4)
    assert d.observe(50.0)[0] == "normal"  # warm-up: only non-finite counts
    for x in (5.0, 5.1, 4.9, 5.0, 5.05):
        assert d.observe(x)[0] == "normal"
    assert d.observe(5.3)[0] == "normal"  # within 3 sigma (the 50 inflates std)
    assert d.observe(float("nan"))[0] == "spike"
    d = SpikeDetector(sigma=3.0, window=4, ratio=None, warmup_steps=4, persistence=2)
    for x in (5.0, 5.1, 4.9, 5.0):
        d.observe(x)
    verdict, reason = d.observe(9.0)
    assert verdict == "abnormal" and "9" in reason and not d.calm
    assert d.observe(5.0)[0] == "normal" and d.calm  # one blip is not a spike
    assert [d.observe(9.0)[0], d.observe(9.5)[0]] == ["abnormal", "spike"]
    assert list(d.losses) == [5.1, 4.9, 5.0, 5.0]  # abnormal losses never enter the window
    flat = SpikeDetector(warmup_steps=2, ratio=2.0, min_increase=0.5)
    for _ in range(5):
        flat.observe(0.01)
    assert flat.observe(0.4)[0] == "normal"  # 40x the mean, but within min_increase
