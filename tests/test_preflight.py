"""The hints of ``loki fit/validate --ckpt_path`` refusals (``loki.preflight``)."""

from __future__ import annotations

import pytest

from loki.errors import LokiError
from loki.preflight import check_checkpoint


def _refusal(path) -> str:
    with pytest.raises(LokiError) as info:
        check_checkpoint(path)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_a_file_that_no_checkpoint_sits_beside_gets_where_runs_keep_them(tmp_path,
                                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "README.md").write_text("# notes\n")
    assert _refusal("README.md") == (
        "checkpoint README.md is truncated or not a checkpoint file (not a complete torch.save "
        "archive); a run's checkpoints are in its checkpoints folder: "
        "runs/<run>/checkpoints/last.ckpt")


def test_a_truncated_checkpoint_alone_in_its_folder_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "last.ckpt").write_bytes(b"PK\x03\x04 cut short")
    assert _refusal("last.ckpt").endswith(
        "; there is no other complete checkpoint in the current folder")
    assert _refusal(tmp_path / "last.ckpt").endswith(
        f"; there is no other complete checkpoint in {tmp_path}")
