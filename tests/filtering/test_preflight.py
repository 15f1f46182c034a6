"""Every mistake a filter run can find in its config or files is one line, before any write."""

from __future__ import annotations

import re

import pytest
from conftest import cli_error, filter_config, prose, write_jsonl

from loki.filtering.stage_config import BenchmarkTask


@pytest.fixture
def inputs(tmp_path, rng, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "raw" / "a.jsonl", [{"id": f"d{i}", "text": prose(rng)}
                                               for i in range(6)])
    task = write_jsonl(tmp_path / "task.jsonl", [{"question": prose(rng, 2)}])
    return [str(tmp_path / "raw" / "a.jsonl")], [BenchmarkTask("t", str(task), ["question"])]


def full(tmp_path, inputs, **stages):
    paths, tasks = inputs
    return filter_config(tmp_path, paths, clean=True, quality=True, decontam={"tasks": tasks},
                         **stages)


def nothing_written(tmp_path):
    assert not (tmp_path / "work").exists() and not (tmp_path / "out").exists()


def test_a_head_trained_on_another_embedder(tmp_path, inputs, capfd):
    import numpy as np

    from loki.filtering.quality import QualityHead

    cfg = full(tmp_path, inputs)
    QualityHead(np.ones(4, np.float32), 0.0, "binary", "minilm", {}).save(cfg.quality.model_path)
    assert "was trained on 'minilm' embeddings but embed.model is 'hashing'" in cli_error(
        cfg, capfd)
    nothing_written(tmp_path)


@pytest.mark.parametrize("change, expected", [
    (lambda c: setattr(c.decontam.tasks[0], "path", "gone.jsonl"), "'gone.jsonl'"),
    (lambda c: setattr(c.decontam.tasks[0], "fields", ["nope"]), "decontam.tasks[].fields"),
    (lambda c: setattr(c.embed, "model", "minlm"), "embedder 'minlm' is neither"),
    (lambda c: setattr(c.quality, "train_data", "labels.jsonl"), "'labels.jsonl' (to train it"),
    (lambda c: setattr(c.input, "paths", ["raw/*.jsnol"]), "'raw/*.jsnol' matches no files"),
])
def test_a_config_mistake(tmp_path, inputs, capfd, change, expected):
    cfg = full(tmp_path, inputs)
    change(cfg)
    assert expected in cli_error(cfg, capfd)
    nothing_written(tmp_path)


def test_an_output_dir_under_a_file(tmp_path, inputs, capfd):
    cfg = full(tmp_path, inputs)
    (tmp_path / "afile").write_text("x")
    cfg.output_dir = str(tmp_path / "afile" / "out")
    cfg.work_dir = str(tmp_path / "work")
    assert "is a file, not a folder" in cli_error(cfg, capfd)
    nothing_written(tmp_path)


@pytest.mark.parametrize("line, says", [
    ('{"question": "cut', r"task.jsonl:2: decontamination task 't' has a line that is not JSON "
                         r"\(the last line, with no newline: the file may be truncated\)"),
    ('["a list"]\n', r"task.jsonl:2: decontamination task 't' has a line that is a JSON list")])
def test_a_benchmark_line_that_is_not_an_item_is_refused(tmp_path, inputs, capfd, line, says):
    """An item that cannot be read is not in the index, so the run would let it through."""
    task = tmp_path / "task.jsonl"
    task.write_text(task.read_text() + line)
    assert re.search(says, cli_error(full(tmp_path, inputs), capfd))
    nothing_written(tmp_path)
