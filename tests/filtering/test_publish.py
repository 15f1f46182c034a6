"""Publishing: output_dir changes only when a complete new set is ready, and holds only that set."""

from __future__ import annotations

import os

import pytest
from conftest import cli_error, filter_config, prose, read_output, run_filter, write_jsonl


def corpus(tmp_path, rng, n=12):
    rows = [{"id": f"d{i:02d}", "text": prose(rng)} for i in range(n)]
    write_jsonl(tmp_path / "raw" / "a.jsonl", rows[::2])
    write_jsonl(tmp_path / "raw" / "b.jsonl", rows[1::2])
    return [str(tmp_path / "raw" / "*.jsonl")]


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_rerun_with_fewer_tasks_leaves_no_old_shard(tmp_path, rng):
    inputs = corpus(tmp_path, rng)
    cfg = filter_config(tmp_path, inputs, factual=True)
    cfg.executor.tasks = 2
    run_filter(cfg)
    assert sorted(os.listdir(tmp_path / "out")) == ["00000.jsonl.gz", "00001.jsonl.gz",
                                                    "filter_report.json", "filter_report.md"]
    cfg = filter_config(tmp_path, inputs, factual=True)
    cfg.work_dir = str(tmp_path / "work-1task")
    _, out = run_filter(cfg)
    assert sorted(os.listdir(tmp_path / "out")) == ["00000.jsonl.gz", "filter_report.json",
                                                    "filter_report.md"]
    assert len(out) == 12
    assert sorted(os.listdir(tmp_path)) == ["out", "raw", "work", "work-1task"]  # nothing left


def test_a_run_killed_while_writing_leaves_the_earlier_output_whole(tmp_path, rng, monkeypatch):
    inputs = corpus(tmp_path, rng)
    run_filter(filter_config(tmp_path, inputs))
    before = snapshot(tmp_path / "out")
    import loki.filtering.steps as steps

    def killed(self, data, rank=0, world_size=1):
        for i, doc in enumerate(data):
            if i == 5:
                raise KeyboardInterrupt
            yield doc

    monkeypatch.setattr(steps.StripPrivate, "run", killed)  # inside the final stage's writer job
    cfg = filter_config(tmp_path, inputs)
    cfg.work_dir = str(tmp_path / "work2")
    with pytest.raises(KeyboardInterrupt):
        run_filter(cfg)
    assert snapshot(tmp_path / "out") == before


def test_a_crash_between_the_renames_is_finished_by_a_rerun(tmp_path, monkeypatch):
    from loki.filtering.publish import publish_local

    staging, out = tmp_path / "staging", tmp_path / "out"
    staging.mkdir()
    out.mkdir()
    (staging / "00000.jsonl.gz").write_bytes(b"new")
    (out / "00000.jsonl.gz").write_bytes(b"old")
    (out / "00001.jsonl.gz").write_bytes(b"old")
    real, calls = os.replace, []

    def crash_second(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the old set is aside, the new one not yet in
        real(src, dst)

    monkeypatch.setattr(os, "replace", crash_second)
    with pytest.raises(KeyboardInterrupt):
        publish_local(str(staging), str(out), ["00000.jsonl.gz"])
    monkeypatch.setattr(os, "replace", real)
    assert not out.exists() and snapshot(tmp_path / "out.previous")["00001.jsonl.gz"] == b"old"
    publish_local(str(staging), str(out), ["00000.jsonl.gz"])
    assert snapshot(out) == {"00000.jsonl.gz": b"new"}
    assert sorted(os.listdir(tmp_path)) == ["out", "staging"]


def test_a_remote_output_gets_the_new_set_and_loses_stale_shards(tmp_path):
    import fsspec

    from loki.filtering.publish import publish_remote

    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "00000.jsonl.gz").write_bytes(b"new")
    fs = fsspec.filesystem("memory")
    fs.pipe({"/published/00000.jsonl.gz": b"old", "/published/00001.jsonl.gz": b"old",
             "/published/filter_report.md": b"report"})
    publish_remote(str(staging), "memory://published", ["00000.jsonl.gz"])
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls("/published", detail=False)) == [
        "00000.jsonl.gz", "filter_report.md"]
    assert fs.cat("/published/00000.jsonl.gz") == b"new"


def test_an_output_dir_with_other_files_is_refused_before_any_work(tmp_path, rng, capfd,
                                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)
    inputs = corpus(tmp_path, rng)
    (tmp_path / "out" / "_work").mkdir(parents=True)
    (tmp_path / "out" / "notes.txt").write_text("mine")
    err = cli_error(filter_config(tmp_path, inputs), capfd)
    assert "output_dir" in err and "_work, notes.txt" in err and "<output_dir>.work" in err
    assert not (tmp_path / "work").exists()
    assert read_output(tmp_path / "out") == []


def test_an_output_dir_that_is_a_file_is_refused(tmp_path, rng, capfd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    inputs = corpus(tmp_path, rng)
    (tmp_path / "out").write_text("a file")
    assert "is a file; name a folder" in cli_error(filter_config(tmp_path, inputs), capfd)
    assert (tmp_path / "out").read_text() == "a file" and not (tmp_path / "work").exists()
