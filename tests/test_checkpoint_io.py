"""Checkpoints survive kills at any instant, with ``TMPDIR`` on another filesystem."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from loki import atomic
from loki.checkpoint_io import AtomicCheckpointIO

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="needs /dev/shm (tmpfs) as TMPDIR")
def test_kills_during_checkpoint_writes_leave_a_loadable_last_ckpt(tmp_path):
    """>= 20 SIGKILLs of `loki fit` at random instants inside `last.ckpt` writes (TMPDIR under
    /dev/shm): after each, last.ckpt loads and equals the uninterrupted run's weights and
    optimizer state at its step; resuming from the last one ends bit-identical to the
    uninterrupted run."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "tests.helpers.kill_fit", str(tmp_path), "20",
                          "0", "1"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["mid_write"] >= 20, result
    assert len(result["steps_at_kills"]) >= 15, result  # most kills after a first good save


def test_interrupted_save_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", "/dev/shm")
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "global_step": 1}, path)
    before = path.read_bytes()

    def torn(obj, f, *args, **kwargs):  # writes half, then the process "dies"
        f.write(b"PK\x03\x04" + b"\x00" * 100)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", torn)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "global_step": 2}, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["last.ckpt"]


def test_clean_stale_removes_only_temp_files(tmp_path):
    keep = [tmp_path / "last.ckpt", tmp_path / "step=3.ckpt", tmp_path / "notes.part"]
    stale = [tmp_path / ".loki-tmp-last.ckpt.abc123.part", tmp_path / "rollback-step=1-r0.ckpt.tmp"]
    for p in keep + stale:
        p.write_bytes(b"x")
    removed = atomic.clean_stale(tmp_path, ("rollback-*.ckpt.tmp",))
    assert sorted(removed) == sorted(stale)
    assert all(p.exists() for p in keep) and not any(p.exists() for p in stale)


def test_atomic_write_gives_the_usual_file_mode(tmp_path):
    atomic.write_text(tmp_path / "a.txt", "hello")
    (tmp_path / "b.txt").write_text("hello")
    assert (tmp_path / "a.txt").stat().st_mode == (tmp_path / "b.txt").stat().st_mode
