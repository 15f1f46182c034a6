"""The filter on a real Ray cluster and through Slurm job scripts, against the local executor."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
from conftest import prose, read_output, write_jsonl

from loki.filtering.cli import parse_config
from loki.filtering.pipeline import FilterPipeline

REPO = Path(__file__).resolve().parents[2]
STANDIN = Path(__file__).parent / "slurm_standin"


def small_corpus(root: Path, rng, n: int = 36) -> None:
    rows = [{"id": f"d{i:03d}", "text": prose(rng, 12), "source": "web"} for i in range(n)]
    rows.append(dict(rows[1], id="copy"))
    for i in (4, 9):  # near duplicates: one word changed
        rows.append({"id": f"d{i:03d}-edit", "text": rows[i]["text"].replace(" the ", " a ", 1)})
    for row in rows[3::5]:
        row["text"] += " The bridge opened on 14 March 1931, 2,345 meters long. " + prose(rng, 2)
    write_jsonl(root / "raw" / "part-0.jsonl", rows[::2])
    write_jsonl(root / "raw" / "part-1.jsonl", rows[1::2])
    # one file serves every demo task: the pairs task indexes its choices alone, so they are text
    write_jsonl(root / "tasks.jsonl", [{"query": rows[7]["text"][:300],
                                        "choices": [rows[8]["text"][:200], "x y"]}])


def demo_config(root: Path, kind: str, **options):
    """experiments/data/demo.yaml as shipped, pointed at the small corpus; the embedder is the
    hashing one (MiniLM takes ~8 s to load in every task process) and the benchmark task files
    are the corpus's own."""
    cfg = parse_config(REPO / "experiments" / "data" / "demo.yaml")
    cfg.input.paths = [str(root / "raw" / "*.jsonl")]
    cfg.output_dir, cfg.work_dir = str(root / "out"), str(root / "work")
    cfg.embed.model = "hashing"
    cfg.quality.model_path = str(root / "quality.json")
    cfg.quality.threshold = 0.0
    cfg.semdedup.docs_per_cluster = 10
    for task in cfg.decontam.tasks:
        task.path = str(root / "tasks.jsonl")
    cfg.executor.kind, cfg.executor.tasks, cfg.executor.options = kind, 2, options
    return cfg


def shards(folder: Path) -> dict[str, list]:
    """Documents per output shard, in order (file_path differs only by the run's folder)."""
    import gzip

    out = {}
    for p in sorted(folder.glob("*.jsonl.gz")):
        with gzip.open(p, "rt") as f:
            out[p.name] = [json.loads(line) for line in f]
        for doc in out[p.name]:
            doc["metadata"]["file_path"] = Path(doc["metadata"]["file_path"]).name
    return out


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    import random

    root = tmp_path_factory.mktemp("local")
    small_corpus(root, random.Random(7))
    start = time.perf_counter()
    report = FilterPipeline(demo_config(root, "local")).run()
    return root, report, time.perf_counter() - start


@pytest.mark.slow
def test_demo_filter_on_a_local_ray_cluster_equals_local(local_run, tmp_path):
    ray = pytest.importorskip("ray")
    import random

    root, local_report, local_seconds = local_run
    small_corpus(tmp_path, random.Random(7))
    from loki.executors import RAY_RUNTIME_ENV

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024 ** 2,
             log_to_driver=False, _node_ip_address="127.0.0.1", runtime_env=RAY_RUNTIME_ENV)
    try:
        start = time.perf_counter()
        # tasks_per_job: one Ray actor runs a job's ranks in a process pool (each actor is a new
        # process that imports datatrove; the MinHash buckets job alone has 14 ranks)
        report = FilterPipeline(demo_config(tmp_path, "ray", cpus_per_task=1, mem_per_cpu_gb=0.5,
                                            tasks_per_job=16)).run()
        ray_seconds = time.perf_counter() - start

        @ray.remote
        def start_method():
            import multiprocess

            return multiprocess.get_start_method()

        # the job's workers start their rank pools from a fork server, not by forking the actor
        assert ray.get(start_method.remote()) == "forkserver"
    finally:
        ray.shutdown()
    print(f"demo filter: local {local_seconds:.1f} s, ray {ray_seconds:.1f} s")
    assert shards(tmp_path / "out") == shards(root / "out")
    assert read_output(tmp_path / "out")
    strip = [{k: v for k, v in r.items() if k not in ("seconds", "removed_examples")}
             for r in report["stages"]]
    assert strip == [{k: v for k, v in r.items() if k not in ("seconds", "removed_examples")}
                     for r in local_report["stages"]]
    ray_job = json.load(open(tmp_path / "work" / "logs" / "clean" / "filter" / "executor.json"))
    assert ray_job["tasks_per_job"] == 16 and ray_job["_launched"]  # RayPipelineExecutor's fields


def global_chain(root: Path, kind: str, **options):
    """The demo config cut to clean -> embed -> k-means fit -> assign -> per-cluster SemDeDup ->
    filter -> write: on Slurm every job (and datatrove's merge-stats job after it) is a fresh
    process, so the chain keeps the stages whose dependencies matter (global steps between
    sharded ones); the Ray test runs the whole demo config."""
    cfg = demo_config(root, kind, **options)
    cfg.dedup.exact = cfg.dedup.minhash = False
    cfg.prototypes.enabled = False
    cfg.quality.enabled = cfg.factual.enabled = cfg.decontam.enabled = False
    return cfg


@pytest.mark.slow
def test_slurm_scripts_run_chained_through_a_stand_in(tmp_path, monkeypatch):
    import random

    root = tmp_path / "local"
    small_corpus(root, random.Random(7))
    local_report = FilterPipeline(global_chain(root, "local")).run()
    small_corpus(tmp_path, random.Random(7))
    monkeypatch.setenv("PATH", f"{STANDIN}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}"
                               f"{os.environ['PATH']}")
    monkeypatch.setenv("STANDIN_SLURM_STATE", str(tmp_path / "slurm"))
    cfg = global_chain(tmp_path, "slurm", partition="cpu", time="0:10:00")
    assert FilterPipeline(cfg).run() == {"submitted": True}
    jobs = json.load(open(tmp_path / "slurm" / "jobs.json"))
    work = [j for j in jobs.values() if not j["name"].endswith("merge_stats")
            and "merge_stats" not in j["script"]]
    assert all(j["state"] == "COMPLETED" for j in jobs.values())
    assert [j["name"] for j in work] == [
        "loki-clean-filter", "loki-embed-embed", "loki-kmeans-fit", "loki-kmeans-assign",
        "loki-kmeans-prune", "loki-semdedup-filter", "loki-write-write", "loki-publish-publish"]
    ids = [i for i, j in jobs.items() if j in work]
    for prev, job in zip(ids, work[1:]):  # every job waits for the one before it
        assert f"afterok:{prev}" in job["dependency"]
    assert "launch_pickled_pipeline" in work[0]["script"] and "#SBATCH --array=0-1" in "".join(
        j["script"] for j in work)
    assert shards(tmp_path / "out") == shards(root / "out")
    # the report, once the jobs have ended, from the same config
    report = FilterPipeline(cfg).report()
    assert [r.get("docs_out") for r in report["stages"]] == [
        r.get("docs_out") for r in local_report["stages"]]


def test_ray_is_joined_with_the_fork_server_setup(monkeypatch):
    ray = pytest.importorskip("ray")
    from types import SimpleNamespace

    from loki.executors import RAY_RUNTIME_ENV, ensure_ray, pools_from_a_fork_server

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    ensure_ray(SimpleNamespace(options={}))
    assert calls == [{"address": "10.0.0.1:6379", "log_to_driver": False,
                      "runtime_env": RAY_RUNTIME_ENV}]
    hook = RAY_RUNTIME_ENV["worker_process_setup_hook"]
    assert hook == f"{pools_from_a_fork_server.__module__}.{pools_from_a_fork_server.__name__}"
