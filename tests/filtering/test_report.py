"""The filter report: written only from a run's statistics, unfinished stages marked, and a stage
that keeps nothing named in one line."""

from __future__ import annotations

import json

import pytest
from conftest import cli_error, filter_config, prose, run_filter, stage_row, write_jsonl

from loki.errors import LokiError


def small_run(tmp_path, rng, **stages):
    write_jsonl(tmp_path / "raw" / "a.jsonl", [{"id": f"d{i}", "text": prose(rng)}
                                               for i in range(8)])
    cfg = filter_config(tmp_path, [str(tmp_path / "raw" / "a.jsonl")], **stages)
    return cfg


def test_a_mistyped_work_dir_is_an_error_and_the_report_stays(tmp_path, rng, capfd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = small_run(tmp_path, rng, clean=True)
    run_filter(cfg)
    report = tmp_path / "out" / "filter_report.json"
    before = report.read_text()
    cfg.work_dir = str(tmp_path / "wrok")
    err = cli_error(cfg, capfd, "report")
    assert f"no filter run found in work_dir {tmp_path / 'wrok'}" in err
    assert report.read_text() == before
    assert not (tmp_path / "wrok").exists()


def test_building_the_stage_list_creates_no_folder(tmp_path, rng):
    import numpy as np

    from loki.filtering.pipeline import FilterPipeline
    from loki.filtering.quality import QualityHead

    cfg = small_run(tmp_path, rng, clean=True, dedup={"exact": True}, semdedup=True,
                    quality=True, factual=True)
    QualityHead(np.ones(4, np.float32), 0.0, "binary", "hashing", {}).save(
        cfg.quality.model_path)
    assert len(FilterPipeline(cfg).stages()) == 9  # with embed, kmeans, write and publish
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quality.json", "raw"]


def test_a_half_done_run_reports_its_unfinished_stages(tmp_path, rng, capfd, monkeypatch):
    from loki.cli import main

    monkeypatch.chdir(tmp_path)
    cfg = small_run(tmp_path, rng, clean=True, factual=True)
    cfg.executor.tasks = 2
    run_filter(cfg)
    logs = tmp_path / "work" / "logs" / "factual" / "prune"
    (logs / "completions" / "00001").unlink()  # as while the job's second task still runs
    (logs / "stats" / "00001.json").unlink()
    path = tmp_path / "run.yaml"
    import dataclasses

    import yaml

    path.write_text(yaml.safe_dump(dataclasses.asdict(cfg)))
    published = (tmp_path / "out" / "filter_report.json").read_bytes()
    main(["filter", "report", "--config", str(path)])
    out = capfd.readouterr().out
    assert "incomplete: factual" in out and f"report: {tmp_path / 'work'}/filter_report.md" in out
    # the unfinished run's report goes beside its work; output_dir's still matches its shards
    assert (tmp_path / "out" / "filter_report.json").read_bytes() == published
    report = json.loads((tmp_path / "work" / "filter_report.json").read_text())
    assert stage_row(report, "factual")["status"] == "incomplete (1 of 2 tasks)"
    assert "status" not in stage_row(report, "clean") and report["incomplete"] == ["factual"]
    assert "| factual (incomplete (1 of 2 tasks)) |" in (tmp_path / "work" /
                                                         "filter_report.md").read_text()


@pytest.mark.parametrize("setting, expected", [
    ({"input": {"text_key": "body"}}, "clean kept 0 of 8 documents (skipped_empty 8): check "
                                      "input.paths, input.format (jsonl), input.text_key ('body')"),
    ({"clean": {"min_chars": 10**6}}, "clean kept 0 of 8 documents (dropped_too_short 8)"),
])
def test_a_stage_that_keeps_nothing_is_one_line(tmp_path, rng, capfd, monkeypatch, setting,
                                                expected):
    monkeypatch.chdir(tmp_path)
    cfg = small_run(tmp_path, rng, clean=setting.get("clean", True), factual=True,
                    input=setting.get("input", {}))
    err = cli_error(cfg, capfd)
    assert expected in err, err
    assert not (tmp_path / "out" / "filter_report.json").exists()


def test_an_empty_input_file_is_one_line(tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "a.jsonl").write_text("")
    cfg = filter_config(tmp_path, [str(tmp_path / "raw" / "a.jsonl")], clean=True)
    assert "clean kept 0 of 0 documents: check input.paths" in cli_error(cfg, capfd)


def test_an_empty_stage_reads_as_empty_so_a_chain_runs_to_its_end(tmp_path, rng):
    """On Slurm every job runs whatever the one before kept: an empty stage folder is read as
    empty (not datatrove's 'No files found'), and the report shows the zero."""
    from loki.executors import make_executor
    from loki.filtering.pipeline import FilterPipeline

    cfg = small_run(tmp_path, rng, clean={"min_chars": 10**6}, factual=True)
    pipe = FilterPipeline(cfg)
    for stage in pipe.stages():
        for label, steps, tasks in stage.jobs:
            try:
                make_executor(cfg.executor, steps, tasks, pipe.logging_dir(stage.name, label)).run()
            except LokiError as err:  # on Slurm: the chain's last job fails, naming the reason
                assert stage.name == "publish" and "nothing published" in str(err)
    report = pipe.report()
    assert [(r["stage"], r["docs_in"], r["docs_out"]) for r in report["stages"] if "docs_in" in r] == [
        ("read", 8, 8), ("clean", 8, 0), ("factual", 0, 0), ("write", 0, 0)]
    assert report["incomplete"] == ["publish"]  # nothing to publish: the earlier output stays


def test_a_later_stage_that_keeps_nothing_counts_its_drops_once(tmp_path, monkeypatch):
    """Past clean there is no read row: the stage's own reasons are the count, not twice it."""
    from loki.filtering import report
    from loki.filtering.pipeline import FilterPipeline
    from loki.filtering.stages import Stage

    row = {"docs_in": 402, "docs_out": 0, "reasons": {"dropped_low_quality": 402}}
    monkeypatch.setattr(report, "stage_rows", lambda cfg, stage, timings: [row])
    pipeline = FilterPipeline(filter_config(tmp_path, [str(tmp_path / "a.jsonl")]))
    with pytest.raises(LokiError, match=r"quality kept 0 of 402 documents "
                                        r"\(dropped_low_quality 402\): check quality"):
        pipeline._check_kept_documents(Stage("quality", output=str(tmp_path / "q")))
