"""``loki eval prepare-data``: the benchmark files the offline tasks and decontamination read."""

from __future__ import annotations

import json

import pytest

from loki.errors import LokiError
from loki.eval.local_tasks import prepare_tasks
from loki.eval.prepare_data import PAPER_TASKS, main, prepare_data, task_data
from tests.helpers.benchmarks import DATASETS, ROWS, write_benchmark_source

pytest.importorskip("lm_eval")


def test_hub_datasets_come_from_lm_evals_own_task_files():
    got = {t: task_data(t) for t in PAPER_TASKS}
    assert (got["arc_challenge"].hub_path, got["arc_challenge"].hub_name) == (
        "allenai/ai2_arc", "ARC-Challenge")  # through arc_challenge.yaml's include
    assert (got["mmlu"].hub_path, got["mmlu"].hub_name) == ("cais/mmlu", "all")
    assert (got["truthfulqa_mc2"].folder, got["truthfulqa_mc2"].splits) == (
        "truthfulqa", ("validation",))
    assert got["gsm8k"].hub_path == "openai/gsm8k" and got["gsm8k"].hub_name == "main"
    assert {g.folder: g.splits for g in got.values()} == {k: v for k, (_, v) in DATASETS.items()}
    with pytest.raises(LokiError, match="local text"):
        task_data("loki_demo_cloze")
    with pytest.raises(LokiError, match="no packaged local task"):
        task_data("lambada")


def test_from_dir_writes_the_layout_the_local_tasks_read(tmp_path, capsys):
    source = write_benchmark_source(tmp_path / "export")
    out = tmp_path / "eval"
    main(["--data_dir", str(out), "--from_dir", str(source)])
    assert "mmlu/test" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest) == sum(len(s) for _, s in DATASETS.values())
    assert all(e["rows"] == ROWS for e in manifest.values())
    rows = [json.loads(x) for x in (out / "mmlu" / "test.jsonl").read_text().splitlines()]
    assert rows[0]["choices"] == ["200", "201", "100", "103"]  # parquet lists come back as lists
    prepare_tasks([f"{t}_local" for t in PAPER_TASKS], out, tmp_path / "bound")  # no file missing

    # existing files are kept unless --overwrite; a missing source fails before any write
    (out / "gsm8k" / "train.jsonl").write_text("{}\n")
    prepare_data(["gsm8k"], out, source)
    assert (out / "gsm8k" / "train.jsonl").read_text() == "{}\n"
    (source / "gsm8k" / "test.jsonl").unlink()
    with pytest.raises(LokiError, match="no 'test' split of gsm8k"):
        prepare_data(["gsm8k"], out, source, overwrite=True)
    assert (out / "gsm8k" / "train.jsonl").read_text() == "{}\n"


def test_online_reads_the_hub_dataset_lm_eval_names(tmp_path, monkeypatch):
    calls = []

    def load_dataset(path, name=None, split=None, **kw):
        calls.append((path, name, split))
        return [{"question": "q", "answer": "#### 1"}]

    monkeypatch.setattr("datasets.load_dataset", load_dataset)
    prepare_data(["gsm8k"], tmp_path)
    assert calls == [("openai/gsm8k", "main", "train"), ("openai/gsm8k", "main", "test")]
    assert json.loads((tmp_path / "manifest.json").read_text())["gsm8k/test"]["source"] == (
        "hub:openai/gsm8k:main")
