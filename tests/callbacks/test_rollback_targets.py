"""``load_checkpoint`` accepts only a file that holds everything a rollback restores."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import torch

from callbacks.rollback_targets import load_checkpoint


class _Data:  # the DataModule's state is stored under its class name
    pass


def _trainer():
    return SimpleNamespace(datamodule=_Data())


def _ckpt() -> dict:
    return {"state_dict": {"w": torch.ones(2)}, "optimizer_states": [{"state": {}}],
            "global_step": 12, "loki": {"tokens_seen": 4096}, "_Data": {"stream": {}},
            "callbacks": {"LossSpikeRollback{}": {"detector": {"seen": 7}}}}


def test_a_complete_checkpoint_loads_as_a_target(tmp_path: Path):
    torch.save(_ckpt(), tmp_path / "a.ckpt")
    target = load_checkpoint(str(tmp_path / "a.ckpt"), _trainer(), "LossSpikeRollback{}")
    assert target["kind"] == "disk" and target["step"] == 12 and target["tokens_seen"] == 4096
    assert target["detector"] == {"seen": 7} and target["datamodule"] == {"stream": {}}
    assert torch.equal(target["state_dict"]["w"], torch.ones(2))
    other = load_checkpoint(str(tmp_path / "a.ckpt"), _trainer(), "another key")
    assert other is not None and other["detector"] is None  # statistics start afresh


def test_truncated_or_incomplete_checkpoints_are_refused(tmp_path: Path, caplog):
    torch.save(_ckpt(), tmp_path / "whole.ckpt")
    data = (tmp_path / "whole.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    lacking = _ckpt()
    del lacking["loki"], lacking["_Data"]
    torch.save(lacking, tmp_path / "lacking.ckpt")
    with caplog.at_level(logging.WARNING):
        assert load_checkpoint(str(tmp_path / "cut.ckpt"), _trainer(), "k") is None
        assert load_checkpoint(str(tmp_path / "lacking.ckpt"), _trainer(), "k") is None
        assert load_checkpoint(str(tmp_path / "gone.ckpt"), _trainer(), "k") is None
    assert "cut.ckpt is unreadable" in caplog.text
    assert "lacking.ckpt lacks ['loki', '_Data']" in caplog.text
