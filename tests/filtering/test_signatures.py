"""A rerun reuses a finished stage only when its settings and inputs are unchanged; a changed stage
is redone with every stage after it, and said so once."""

from __future__ import annotations

import json
import os

from conftest import filter_config, prose, read_output, run_filter, stage_row, write_jsonl


def corpus(tmp_path, rng, n=16):
    rows = [{"id": f"d{i:02d}", "text": prose(rng)} for i in range(n)]
    rows[3]["text"] = prose(rng, 2)  # fewer than 50 words: Gopher quality drops it
    write_jsonl(tmp_path / "raw" / "a.jsonl", rows[::2])
    write_jsonl(tmp_path / "raw" / "b.jsonl", rows[1::2])
    return [str(tmp_path / "raw" / "*.jsonl")]


def marker(tmp_path, stage, job):
    return (tmp_path / "work" / "logs" / stage / job / "completions" / "00000").stat().st_mtime_ns


def rows(report):
    return [(r["stage"], r.get("docs_in"), r.get("docs_out")) for r in report["stages"]]


def test_a_rerun_reuses_and_a_changed_setting_redoes_from_its_stage(tmp_path, rng, capsys):
    inputs = corpus(tmp_path, rng)
    cfg = filter_config(tmp_path, inputs, clean={"min_chars": 50}, factual=True)
    first, _ = run_filter(cfg)
    assert "changed since" not in capsys.readouterr().out
    before = marker(tmp_path, "clean", "filter")

    again, _ = run_filter(cfg)
    assert again["reused"] == ["clean", "factual", "write", "publish"]
    assert rows(again) == rows(first) and marker(tmp_path, "clean", "filter") == before
    assert "changed since" not in capsys.readouterr().out

    cfg.clean.gopher_quality = False
    changed, out = run_filter(cfg)
    line = capsys.readouterr().out
    assert line.count("changed since") == 1
    assert ("clean (clean.gopher_quality); redoing clean, factual, write, publish" in line), line
    assert changed["reused"] == []
    assert stage_row(changed, "clean")["docs_out"] == stage_row(first, "clean")["docs_out"] + 1
    assert "dropped_gopher_short_doc" not in stage_row(changed, "clean")["reasons"]
    fresh = filter_config(tmp_path / "fresh", inputs, clean={"min_chars": 50}, factual=True)
    fresh.clean.gopher_quality = False
    assert rows(run_filter(fresh)[0]) == rows(changed)
    assert len(out) == stage_row(changed, "write")["docs_out"]


def test_new_input_files_redo_the_clean_stage(tmp_path, rng, capsys):
    inputs = corpus(tmp_path, rng)
    cfg = filter_config(tmp_path, inputs)
    run_filter(cfg)
    write_jsonl(tmp_path / "raw" / "c.jsonl", [{"id": "new", "text": prose(rng)}])
    report, out = run_filter(cfg)
    assert "clean (input_files)" in capsys.readouterr().out
    assert "new" in {d["id"] for d in out} and stage_row(report, "clean")["docs_in"] == 17


def test_fewer_tasks_in_the_same_work_dir_leave_one_shard(tmp_path, rng):
    inputs = corpus(tmp_path, rng)
    cfg = filter_config(tmp_path, inputs)
    cfg.executor.tasks = 2
    run_filter(cfg)
    cfg.executor.tasks = 1
    _, out = run_filter(cfg)
    assert sorted(p.name for p in (tmp_path / "out").glob("*.jsonl.gz")) == ["00000.jsonl.gz"]
    assert len(out) == 16
    assert sorted(os.listdir(tmp_path / "work" / "stages" / "01_clean")) == ["00000.jsonl.gz"]


def test_a_new_threshold_redoes_quality_and_not_the_embeddings(tmp_path, rng, capsys):
    inputs = corpus(tmp_path, rng)
    cfg = filter_config(tmp_path, inputs, quality={"threshold": 0.0})
    first, _ = run_filter(cfg)
    assert [r["stage"] for r in first["stages"]][:2] == ["quality_train", "read"]
    embedded = marker(tmp_path, "embed", "embed")
    again, _ = run_filter(cfg)  # the head trained by the first run is the same input
    assert again["reused"] == [s for s, _, _ in rows(again) if s != "read"]
    cfg.quality.threshold = 0.9
    report, _ = run_filter(cfg)
    out = capsys.readouterr().out
    assert "quality (quality.threshold); redoing quality, write, publish" in out, out
    assert marker(tmp_path, "embed", "embed") == embedded
    assert stage_row(report, "quality")["docs_out"] < stage_row(first, "quality")["docs_out"]


def test_a_rerun_reusing_every_stage_reports_what_the_run_that_computed_them_did(
        tmp_path, rng, capsys):
    """The head the first run trained keeps its quality_train row (and first timing) on a rerun
    that reuses it, so both runs write the same report apart from what they reused."""
    from loki.filtering.cli import main

    inputs = corpus(tmp_path, rng)
    cfg = filter_config(tmp_path, inputs, quality={"threshold": 0.0}, factual=True)
    first, _ = run_filter(cfg)
    files = {n: (tmp_path / "out" / n).read_text() for n in ("filter_report.json",
                                                             "filter_report.md")}
    again, _ = run_filter(cfg)
    stages = ["quality_train", "clean", "embed", "quality", "factual", "write", "publish"]
    assert [r["stage"] for r in first["stages"]] == ["quality_train", "read", *stages[1:]]
    assert first["reused"] == [] and again["reused"] == stages
    assert ({k: v for k, v in again.items() if k not in ("reused", "path")}
            == {k: v for k, v in first.items() if k not in ("reused", "path")})
    assert (tmp_path / "out" / "filter_report.md").read_text() == files["filter_report.md"]
    assert (json.loads((tmp_path / "out" / "filter_report.json").read_text())
            == {**json.loads(files["filter_report.json"]), "reused": stages})
    # the console: the read row is the clean stage's reading, reused with it
    import dataclasses

    import yaml

    (tmp_path / "run.yaml").write_text(yaml.safe_dump(dataclasses.asdict(cfg)))
    capsys.readouterr()
    main(["--config", str(tmp_path / "run.yaml")])
    lines = [line.split() for line in capsys.readouterr().out.splitlines()
             if "docs" in line]
    assert [(w[0], w[-1]) for w in lines] == [(s, "reused") for s in ["read", *stages[1:-1]]]


def test_a_head_trained_here_is_trained_again_on_new_labelled_data(tmp_path, rng, capsys):
    inputs = corpus(tmp_path, rng)
    cfg = filter_config(tmp_path, inputs, quality={"threshold": 0.0})
    run_filter(cfg)
    labels = tmp_path / "labels.jsonl"
    write_jsonl(labels, [{"text": prose(rng), "label": i % 2} for i in range(10)])
    cfg.quality.train_data = str(labels)
    report, _ = run_filter(cfg)
    assert ("quality_train (train_data); redoing quality_train, quality, write, publish"
            in capsys.readouterr().out)
    assert report["reused"] == ["clean", "embed"]


def test_another_quality_head_redoes_the_quality_stage(tmp_path, rng, capsys):
    from loki.filtering.config import TrainQualityConfig
    from loki.filtering.quality import train_quality

    inputs = corpus(tmp_path, rng)
    cfg = filter_config(tmp_path, inputs, quality={"threshold": 0.0})
    run_filter(cfg)
    labels = tmp_path / "labels.jsonl"
    write_jsonl(labels, [{"text": prose(rng), "label": i % 2} for i in range(10)])
    train_quality(TrainQualityConfig(data=str(labels), output=cfg.quality.model_path,
                                     embedder="hashing", holdout=0.0, overwrite=True))
    run_filter(cfg)
    assert "quality (quality_head.sha256, quality_head.trained_by)" in capsys.readouterr().out


def test_a_new_output_dir_is_published_without_redoing_a_stage(tmp_path, rng, capsys):
    inputs = corpus(tmp_path, rng)
    cfg = filter_config(tmp_path, inputs, factual=True)
    run_filter(cfg)
    cfg.output_dir = str(tmp_path / "out2")
    report, out = run_filter(cfg)
    assert "publish (output_dir); redoing publish " in capsys.readouterr().out
    assert report["reused"] == ["clean", "factual", "write"]
    assert out == read_output(tmp_path / "out")
    (tmp_path / "out2" / "00000.jsonl.gz").unlink()
    import shutil

    shutil.rmtree(tmp_path / "out2")
    _, out = run_filter(cfg)  # a deleted output is published again
    assert "publish (" in capsys.readouterr().out and out == read_output(tmp_path / "out")


def test_changed_benchmark_tasks_redo_the_index_and_decontam_only(tmp_path, rng, capsys):
    from loki.filtering.stage_config import BenchmarkTask

    inputs = corpus(tmp_path, rng)
    task = tmp_path / "task.jsonl"
    text = json.loads((tmp_path / "raw" / "a.jsonl").read_text().splitlines()[2])["text"]
    write_jsonl(task, [{"question": "nothing in the corpus looks like this sentence at all, "
                                    "not one thirteen word run of it"}])
    cfg = filter_config(tmp_path, inputs, decontam={"tasks": [BenchmarkTask("t", str(task),
                                                                            ["question"])]})
    first, _ = run_filter(cfg)
    assert first["benchmark_hits_per_task"] == {}
    write_jsonl(task, [{"question": text[:400]}])  # the same file, now a copy of a document
    report, _ = run_filter(cfg)
    assert "decontam_index (files); redoing decontam_index, decontam, publish" in (
        capsys.readouterr().out)
    assert report["benchmark_hits_per_task"] == {"t": 1}
    assert report["reused"] == ["clean"]


def test_slurm_stores_signatures_and_clears_changed_stages_before_submitting(tmp_path, rng,
                                                                          monkeypatch):
    import loki.executors

    inputs = corpus(tmp_path, rng)
    cfg = filter_config(tmp_path, inputs, factual=True)
    run_filter(cfg)
    submitted = []
    monkeypatch.setattr(loki.executors, "submit_chain", lambda ex, jobs: submitted.extend(jobs))
    cfg.executor.kind, cfg.factual.strength = "slurm", 0.5
    from loki.filtering.pipeline import FilterPipeline

    assert FilterPipeline(cfg).run() == {"submitted": True}
    assert [name for name, *_ in submitted] == ["loki-clean-filter", "loki-factual-prune",
                                                "loki-write-write", "loki-publish-publish"]
    work = tmp_path / "work"
    assert (work / "stages" / "01_clean").exists() and not (work / "stages" / "08_factual").exists()
    assert not (work / "logs" / "factual" / "prune").exists()
    record = json.loads((work / "logs" / "factual" / "signature.json").read_text())
    assert record["settings"]["factual"]["strength"] == 0.5
    assert (tmp_path / "out" / "00000.jsonl.gz").exists()  # the earlier output until publish
