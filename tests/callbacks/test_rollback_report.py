"""A rollback event is written as valid JSON whatever its floats."""

from __future__ import annotations

import json

from callbacks.rollback_report import _json_safe


def test_rollback_events_are_valid_json():
    event = {"loss": float("nan"), "grad": [float("inf"), 1.0], "cfg": {"x": -float("inf")}}
    line = json.dumps(_json_safe(event), allow_nan=False)
    assert json.loads(line) == {"loss": None, "grad": [None, 1.0], "cfg": {"x": None}}
