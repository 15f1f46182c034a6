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


def test_a_redo_moves_every_output_of_the_earlier_run_aside(tmp_path):
    from loki.demo_run import archive

    for name in ("checkpoints/last.ckpt", "eval/results.json", "eval-cli/EVAL_DONE.json",
                 "REPORT.md", "loss_vs_tokens.png", "stages/fit.json", "demo.log"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    moved = archive(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["archive", "demo.log", "stages"]
    assert sorted(p.name for p in moved.iterdir()) == [
        "REPORT.md", "checkpoints", "eval", "eval-cli", "loss_vs_tokens.png"]
    assert archive(tmp_path) is None  # nothing left to move
