"""The whole pipeline: every stage, the report, resumability, the CLI and the YAML configs."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from conftest import filter_config, prose, read_output, run_filter, write_jsonl

from loki.errors import LokiError
from loki.filtering.config import FilterConfig
from loki.filtering.stage_config import BenchmarkTask

REPO = Path(__file__).resolve().parents[2]
QUESTION = ("Which planet in our solar system has the largest number of known moons orbiting "
            "around it according to the latest count?")


def corpus(tmp_path, rng, n=40):
    rows = [{"id": f"d{i:03d}", "text": prose(rng, 14), "source": "web"} for i in range(n)]
    rows.append(dict(rows[0], id="copy"))
    for row in rows[3::4]:
        row["text"] += " Alan Turing was born on 23 June 1912. " + prose(rng, 2)
    rows[5]["text"] = f"{prose(rng, 6)} {QUESTION} {prose(rng, 6)}"
    write_jsonl(tmp_path / "raw" / "part-0.jsonl", rows[: n // 2])
    write_jsonl(tmp_path / "raw" / "part-1.jsonl", rows[n // 2:])
    tasks = write_jsonl(tmp_path / "tasks.jsonl", [{"question": QUESTION, "answer": "Saturn"}])
    return [BenchmarkTask("planets", str(tasks), ["question", "answer"])]


def full_config(tmp_path, tasks, tasks_n=2):
    cfg = filter_config(tmp_path, [str(tmp_path / "raw" / "*.jsonl")], clean=True,
                        dedup={"exact": True, "minhash": True}, semdedup={"docs_per_cluster": 10},
                        prototypes={"keep_fraction": 0.9}, quality={"threshold": 0.0},
                        factual={"strength": 1.0}, decontam={"tasks": tasks})
    cfg.executor.tasks = tasks_n
    return cfg


def test_every_stage_runs_and_reports(tmp_path, rng):
    tasks = corpus(tmp_path, rng)
    report, out = run_filter(full_config(tmp_path, tasks))
    names = [r["stage"] for r in report["stages"]]
    assert names == ["decontam_index", "quality_train", "read", "clean", "exact_dedup",
                     "minhash_dedup", "embed", "kmeans", "semdedup", "prototypes", "quality",
                     "factual", "decontam", "publish"]
    rows = {r["stage"]: r for r in report["stages"] if "docs_in" in r}
    assert rows["clean"]["docs_in"] == 41
    assert rows["exact_dedup"]["docs_out"] == 40
    assert rows["prototypes"]["docs_out"] == round(0.9 * rows["prototypes"]["docs_in"])
    assert rows["factual"]["bytes_out"] < rows["factual"]["bytes_in"]
    for a, b in zip(names[2:], names[3:]):  # each stage reads what the previous one wrote
        if a in rows and b in rows:
            assert rows[a]["docs_out"] == rows[b]["docs_in"]
    assert report["benchmark_hits_per_task"] == {"planets": 1}
    assert all(r["seconds"] is not None for r in report["stages"] if r["stage"] != "read")
    assert all(r["adds_up"] for r in report["stages"] if "docs_in" in r)  # in = out + removed
    assert rows["prototypes"]["removed_examples"]
    assert len(out) == rows["decontam"]["docs_out"]
    assert all(set(d["metadata"]) >= {"source", "quality"} for d in out)
    assert not any(k.startswith("_") for d in out for k in d["metadata"])
    assert not any("23 June 1912" in d["text"] or QUESTION[:40] in d["text"] for d in out)
    md = (tmp_path / "out" / "filter_report.md").read_text()
    assert "| semdedup |" in md and "planets: 1" in md
    written = json.loads((tmp_path / "out" / "filter_report.json").read_text())
    assert written == {k: v for k, v in report.items() if k != "path"}  # path: where it went


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_output(tmp_path, rng, monkeypatch):
    tasks = corpus(tmp_path / "a", rng)
    reference, ref_out = run_filter(full_config(tmp_path / "a", tasks))

    import shutil

    shutil.copytree(tmp_path / "a" / "raw", tmp_path / "b" / "raw")
    cfg = full_config(tmp_path / "b", tasks)
    import loki.filtering.factual as factual

    real, calls = factual.prune_facts, {"n": 0}

    def crash_midway(text, strength):  # the process "dies" inside the factual stage's 2nd task
        calls["n"] += 1
        if calls["n"] == 25:
            raise KeyboardInterrupt
        return real(text, strength)

    monkeypatch.setattr(factual, "prune_facts", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        run_filter(cfg)
    monkeypatch.setattr(factual, "prune_facts", real)
    logs = tmp_path / "b" / "work" / "logs"
    assert os.listdir(logs / "factual" / "prune" / "completions") == ["00000"], calls
    clean_marker = logs / "clean" / "filter" / "completions" / "00000"
    mtime = clean_marker.stat().st_mtime_ns
    report, out = run_filter(cfg)
    assert clean_marker.stat().st_mtime_ns == mtime  # completed tasks were not redone

    def comparable(rows):  # file_path differs: the two runs read copies in different folders
        return sorted(({**d, "metadata": {k: v for k, v in d["metadata"].items()
                                          if k != "file_path"}} for d in rows), key=lambda d: d["id"])

    assert comparable(out) == comparable(ref_out)
    def strip(r):
        return [{k: v for k, v in row.items() if k not in ("seconds", "removed_examples")}
                           for row in r["stages"] if "docs_in" in row]  # noqa: E731
    assert strip(report) == strip(reference)


def test_missing_required_task_file_fails_before_any_work(tmp_path, rng):
    corpus(tmp_path, rng)
    cfg = full_config(tmp_path, [BenchmarkTask("gone", str(tmp_path / "gone.jsonl"))])
    with pytest.raises(LokiError, match="gone.jsonl"):
        run_filter(cfg)
    assert not (tmp_path / "work" / "logs").exists()


def test_cli_runs_yaml_and_train_quality(tmp_path, rng, capsys):
    from loki.filtering.cli import main

    corpus(tmp_path, rng, n=12)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"""
input: {{paths: ["{tmp_path}/raw/*.jsonl"]}}
output_dir: {tmp_path}/out
executor: {{tasks: 1}}
embed: {{model: hashing}}
semdedup: {{enabled: false}}
prototypes: {{enabled: false}}
quality: {{model_path: {tmp_path}/q.json, threshold: 0.0}}
decontam: {{enabled: false}}
""")
    main(["train-quality", "--data", "seed", "--output", str(tmp_path / "q.json"),
          "--embedder", "hashing"])
    said = capsys.readouterr().out.strip().splitlines()[-1]
    assert said.startswith(f"quality head: {tmp_path / 'q.json'} (binary, hashing embeddings; ")
    assert re.search(r"held-out accuracy \d\.\d{3} on \d+ texts", said), said
    main(["--config", str(cfg)])
    assert "report:" in capsys.readouterr().out
    assert read_output(tmp_path / "out")
    with pytest.raises(LokiError, match="factual.strength"):
        main(["--config", str(cfg), "--factual.strength", "2"])


@pytest.mark.parametrize("name", ["demo.yaml", "web-1.4b.yaml"])
def test_shipped_configs_parse(name):
    from loki.filtering.cli import parse

    cfg = parse(FilterConfig, ["--config", str(REPO / "experiments" / "data" / name)], "loki filter")
    assert (cfg.decontam.tasks or cfg.decontam.lm_eval_tasks) and cfg.input.paths


def test_slurm_block_builds_chained_executors(tmp_path, rng):
    from loki.executors import make_executor
    from loki.filtering.pipeline import FilterPipeline

    tasks = corpus(tmp_path, rng, n=8)
    cfg = full_config(tmp_path, tasks)
    cfg.executor.kind = "slurm"
    cfg.executor.options = {"partition": "cpu", "time": "1:00:00"}
    pipe = FilterPipeline(cfg)
    last = None
    for stage in pipe.stages():
        for label, steps, n in stage.jobs:
            last = make_executor(cfg.executor, steps, n, pipe.logging_dir(stage.name, label), last)
    assert type(last).__name__ == "SlurmPipelineExecutor" and last.depends is not None


def test_work_dir_defaults_beside_output_dir_and_is_never_inside_it(tmp_path):
    from loki.filtering.cli import parse

    out = tmp_path / "filtered"
    cfg = parse(FilterConfig, ["--output_dir", str(out)], "loki filter")
    assert cfg.work_dir == f"{out}.work"
    assert parse(FilterConfig, ["--output_dir", "s3://bucket/f/"], "loki filter").work_dir == \
        "s3://bucket/f.work"
    for inside in (out / "_work", out, out / "a" / ".." / "b"):
        with pytest.raises(LokiError, match="is inside output_dir"):
            parse(FilterConfig, ["--output_dir", str(out), "--work_dir", str(inside)],
                  "loki filter")
    assert parse(FilterConfig, ["--output_dir", str(out), "--work_dir", f"{out}-work"],
                 "loki filter").work_dir == f"{out}-work"


@pytest.mark.parametrize("section, changes, message", [
    ("input", {"format": "csv"}, "input.format must be jsonl, parquet, text or hf, not 'csv'"),
    ("embed", {"dtype": "bfloat16"}, "embed.dtype must be float32 or float16, not 'bfloat16'"),
    ("embed", {"device": "tpu"}, "embed.device must be auto, cpu or cuda, not 'tpu'"),
    ("semdedup", {"keep": "medium"}, "semdedup.keep must be hard or easy, not 'medium'"),
    ("semdedup", {"compare_to": "none"}, "semdedup.compare_to must be kept or all, not 'none'"),
    ("semdedup", {"kmeans": "torch"}, "semdedup.kmeans must be faiss or sklearn, not 'torch'"),
    ("prototypes", {"keep_fraction": 0.0}, "prototypes.keep_fraction must be in (0, 1], not 0.0"),
    ("prototypes", {"keep": "soft"}, "prototypes.keep must be hard or easy, not 'soft'"),
    ("factual", {"strength": 1.5}, "factual.strength must be in [0, 1], not 1.5"),
    ("decontam", {"frequent_fraction": -0.1},
     "decontam.frequent_fraction must be in [0, 1], not -0.1"),
])
def test_each_stage_checks_its_settings_when_built_in_python(section, changes, message):
    """A config built in a notebook or script gets the one line a YAML value gets, naming the
    key: each stage's settings check themselves, whoever builds them."""
    import dataclasses

    kind = type(getattr(FilterConfig(), section))
    fine = kind()
    with pytest.raises(LokiError) as err:
        dataclasses.replace(fine, **changes)
    assert str(err.value) == message
