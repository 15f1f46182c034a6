"""``make demo``'s export stage writes ``<run_dir>/hf`` from the run's last checkpoint, and the
report names it."""

from __future__ import annotations


def test_demo_export_stage_and_the_report_line(trained_ckpt, tmp_path):
    from loki.demo import DemoConfig
    from loki.demo_stages import STAGES
    from loki.report import build_report

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").symlink_to(trained_ckpt)
    summary = STAGES["export"](DemoConfig(run_dir=str(run)))
    assert summary["output"] == str(run / "hf") and summary["max_abs_logit_diff"] <= 1e-5
    assert (run / "hf" / "model.safetensors").is_file()
    assert "max abs logit difference" in summary["line"]  # the stage's one console line

    (tmp_path / "data").mkdir()  # a data root given is read, so it must exist
    report = build_report(run, tmp_path / "data")
    assert report["hf_export"] == str(run / "hf")
    assert f"Hugging Face export (`loki export hf`): `{run / 'hf'}`" in (
        run / "REPORT.md").read_text()
    (run / "hf" / "loki_export.json").unlink()  # no export, no line
    assert build_report(run, tmp_path / "data")["hf_export"] is None
    assert "Hugging Face export" not in (run / "REPORT.md").read_text()
