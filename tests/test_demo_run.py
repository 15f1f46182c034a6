"""The demo's run folders: what the fit stages read back from them."""

from __future__ import annotations

from pathlib import Path

from loki.demo_run import val_losses
from loki.metrics_csv import evaluation_log_folder


def _metrics(path: Path, rows: list[tuple[int, float]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("step,val/loss\n" + "".join(f"{s},{v}\n" for s, v in rows))


def test_val_losses_are_the_training_runs_not_an_evaluations_or_an_archived_runs(tmp_path):
    _metrics(tmp_path / "csv" / "metrics.csv", [(4, 6.5), (8, 6.0)])
    _metrics(tmp_path / "csv" / evaluation_log_folder("validate") / "metrics.csv", [(8, 9.9)])
    _metrics(tmp_path / "archive" / "20260101-000000" / "csv" / "metrics.csv", [(4, 7.7)])
    assert val_losses(tmp_path) == [(4, 6.5), (8, 6.0)]
