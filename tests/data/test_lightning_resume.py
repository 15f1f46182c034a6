"""Trainer.fit to step k, checkpoint, a new process fit(ckpt_path) to n == a straight run to n."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.data.fixtures import write_source
from tests.data.lightning_run import run

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_resume_in_a_new_process_is_bit_identical(tmp_path):
    shards = str(write_source(tmp_path, n_docs=40, seed=3))
    n, k = 20, 5  # k is inside the batch-size warmup; the run crosses an epoch boundary
    straight = run(shards, n, str(tmp_path / "straight"))
    run(shards, k, str(tmp_path / "first"))
    ckpt = tmp_path / "first" / "ckpt" / f"step={k}.ckpt"  # saved every 5 steps
    saved = torch.load(ckpt, weights_only=False)
    assert saved["LokiDataModule"]["stream"]["step"] == k  # consumed steps, not prefetched
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", "tests.data.lightning_run", shards, str(n),
                    str(tmp_path / "resumed"), str(ckpt)], check=True, cwd=ROOT, env=env,
                   capture_output=True, text=True)
    first = json.loads((tmp_path / "first" / "indices.json").read_text())
    resumed = json.loads((tmp_path / "resumed" / "indices.json").read_text())
    combined = {int(s): v for s, v in {**first, **resumed}.items()}
    assert combined == straight["steps"] and len(combined) == n
    assert straight["data"]["stream"]["consumed"]["web"] > straight["epoch_size"]  # 2nd epoch
    assert [len(v) for v in combined.values()][0] == 2 and len(combined[n - 1]) == 8
    weights = torch.load(tmp_path / "resumed" / "weights.pt")
    assert weights.keys() == straight["weights"].keys()
    assert all(torch.equal(weights[key], straight["weights"][key]) for key in weights)
