"""``run_suite``'s files: results.json, results.md and the EVAL_DONE marker change together, the
marker last, and a full disk leaves the earlier three as they were."""

from __future__ import annotations

import json
import types

import pytest

from loki.atomic import NoRoomError
from loki.errors import LokiError
from loki.eval import local_tasks, suite
from loki.eval.presets import preset_rows
from tests.helpers.full_disk import file_size_limit, snapshot


@pytest.fixture
def fake_lm_eval(monkeypatch):
    """lm-eval's evaluator answering every task with a fixed score (no model is run)."""
    rows = preset_rows("leaderboard")
    results = {r.task: {r.metric: 0.5, r.metric.replace(",", "_stderr,", 1): 0.01} for r in rows}
    evaluator = types.SimpleNamespace(simple_evaluate=lambda **kw: {"results": results})
    monkeypatch.setattr(suite, "require", lambda name, extra: evaluator)
    monkeypatch.setattr(local_tasks, "task_manager", lambda *a: None)


def test_a_full_disk_leaves_the_earlier_results_and_marker(tmp_path, fake_lm_eval):
    out = tmp_path / "eval"
    first = suite.run_suite(None, suite.SuiteConfig(), out, metadata={"checkpoint": "a.ckpt"})
    assert json.loads((out / suite.MARKER).read_text())["time"] == first["time"]
    assert {"results.json", "results.md", suite.MARKER} <= set(snapshot(out))
    before = snapshot(out)
    # a second (forced) run whose results.json would not fit
    with file_size_limit(64 << 10), pytest.raises(NoRoomError) as caught:
        suite.run_suite(None, suite.SuiteConfig(), out, force=True, force_reason="retry",
                        metadata={"checkpoint": "b.ckpt", "padding": "x" * (128 << 10)})
    assert isinstance(caught.value, LokiError)  # `loki eval` prints it on one line
    assert "results.json" in str(caught.value) and "left as they were" in str(caught.value)
    assert snapshot(out) == before  # the old results, the old marker, no temp file
