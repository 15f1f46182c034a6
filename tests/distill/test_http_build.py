"""``loki distill build`` with an OpenAI-compatible teacher over HTTP: killed mid-run and resumed
against a loopback server that rate-limits, fails, hangs and garbles; the key is never written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from loki.distill.cache import CandidateCache
from tests.distill.conftest import shards, student, write_yaml  # noqa: F401 (fixtures)
from tests.distill.llm_server import FaultyLLM

KEY = "sk-test-4f9c2e71b3a8d6e0-never-written"
ROOT = Path(__file__).resolve().parents[2]


def _build(config: Path) -> None:
    from loki.distill.cli import main

    main(["build", "--config", str(config)])


def _build_process(config: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "loki.distill.cli", "build", "--config",
                             str(config)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)  # its workers die with it (killpg)


def test_killed_build_resumes_without_duplicates_and_never_writes_the_key(
        tmp_path, student, shards, monkeypatch, capsys):  # noqa: F811
    _, spec = student
    llm = FaultyLLM(KEY, fault_rate=0.25, hang_s=0.6, gate_after=4)  # task 0: prompts 0,3,6,9
    out = tmp_path / "cache"
    config = write_yaml(tmp_path / "build.yaml", {
        "output": str(out), "tokenizer": spec,
        "prompts": {"shards": [shards], "num_prompts": 12, "prompt_tokens": 12,
                    "max_new_tokens": 10},
        "teachers": [{"kind": "openai", "model": "m", "name": "api", "endpoint": "completions",
                      "base_url": llm.base_url, "api_key_env": "LOKI_TEST_KEY",
                      "timeout_s": 0.3, "backoff_s": 0.01, "max_backoff_s": 0.05,
                      "max_retries": 40, "concurrency": 2}],
        "executor": {"tasks": 3, "workers": 1}})
    monkeypatch.setenv("LOKI_TEST_KEY", KEY)
    proc = _build_process(config)  # `loki distill build`, killed with SIGKILL during task 1
    try:
        deadline = time.monotonic() + 120
        while not llm.gated and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert llm.gated, proc.communicate()[1].decode()[-2000:]
        os.killpg(proc.pid, signal.SIGKILL)  # the command and its executor's workers
        proc.wait()
        markers = sorted(p.name for p in (out / "shards").glob("*.json"))
        assert markers == ["cand-00000.json"] and not (out / "manifest.json").exists()
        first = set(llm.answered)
        assert len(first) == 4
        llm.release()
        _build(config)  # the rerun resumes (in this process)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        llm.close()
    printed = capsys.readouterr()
    # every fault kind was met and survived
    assert all(llm.faults[f] > 0 for f in ("429", "500", "hang", "malformed")), llm.faults
    cache = CandidateCache.open(out)
    index = cache.gather("prompt_index", np.arange(cache.num_prompts))
    assert sorted(index.tolist()) == list(range(12))  # each prompt once: no duplicates
    assert (cache.gather("cont_len", np.arange(12))[:, 1] > 0).all()  # every candidate kept
    # task 0 finished before the kill: its prompts were never asked for again
    assert all(llm.answered[p] == 1 for p in first)
    # the key reached the server, and no file the build wrote holds it
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) > 10
    assert not [p for p in written if KEY.encode() in p.read_bytes()]
    assert KEY not in printed.out + printed.err
