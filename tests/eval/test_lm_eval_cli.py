"""`lm_eval --model loki` from the shell: lm-eval's own CLI, through both ways in."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("lm_eval")


def test_startup_hook_registers_loki_lazily(tmp_path):
    from loki.eval.plugin import main

    main(["install", str(tmp_path)])
    code = ("import site, sys; site.addsitedir(sys.argv[1]);"
            "from lm_eval.api.registry import model_registry as r;"
            "print('loki' in r, 'hf' in r, 'loki.eval.adapter' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["True", "True", "False"]  # registered, built-ins kept, nothing heavy imported


@pytest.mark.slow
def test_python_m_loki_eval_runs_lm_eval_cli(tiny_ckpt, demo_data, tmp_path):
    from loki.eval.local_tasks import prepare_tasks

    include = prepare_tasks(["loki_demo_cloze"], demo_data, tmp_path / "tasks")
    subprocess.run(
        [sys.executable, "-m", "loki.eval", "run", "--model", "loki", "--model_args",
         f"checkpoint={tiny_ckpt},batch_size=2", "--tasks", "loki_demo_cloze",
         "--include_path", str(include), "--limit", "3", "--output_path", str(tmp_path / "o")],
        check=True, capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    results = list((tmp_path / "o").rglob("results_*.json"))
    assert results
    assert "acc,none" in json.loads(results[0].read_text())["results"]["loki_demo_cloze"]
