"""FSDP2's distributed checkpoint folders appear whole or not at all (``loki.checkpoint_sharded``):
a save that dies part-way leaves the previous checkpoint as it was, and a kill between the two
renames that move a save into place is completed before a resume looks for a checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy

from loki import atomic
from loki.checkpoint_read import is_complete_folder
from loki.checkpoint_sharded import (
    AtomicModelParallelStrategy,
    adopt,
    finish_interrupted_swaps,
    move_into_place,
    staging_path,
)
from tests.helpers.fit_run import launch_env, snapshot
from tests.test_sharding import _fit

ROOT = Path(__file__).resolve().parents[1]
FSDP2 = ["--trainer.strategy=lightning.pytorch.strategies.ModelParallelStrategy",
         "--trainer.strategy.data_parallel_size=1", "--trainer.strategy.tensor_parallel_size=1"]


def _folder(path: Path, mark: str) -> Path:
    """A stand-in for a complete distributed checkpoint, told apart by ``mark``."""
    path.mkdir()
    (path / ".metadata").write_text(mark)
    (path / "meta.pt").write_text(mark)
    (path / "__0_0.distcp").write_text(mark)
    return path


def _mark(path: Path) -> str:
    return (path / "__0_0.distcp").read_text()


def _shards_of(files: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in files.items() if k != ".metadata"}  # .metadata holds a save's id


def _shards(path: Path) -> dict[str, str]:
    return _shards_of(snapshot(path))


@pytest.fixture
def fsdp2(tmp_path, monkeypatch):
    """A LokiLM fitted 2 steps under FSDP2 in one process, its strategy adopted as ``loki fit``
    does, and ``last.ckpt`` saved."""
    import torch.distributed as dist

    monkeypatch.setenv("TORCHDYNAMO_DISABLE", "1")  # torchao compiles its 8-bit step otherwise
    environ = dict(os.environ)  # the launch sets LOCAL_RANK, MASTER_PORT...: not for later tests
    strategy = adopt(ModelParallelStrategy(data_parallel_size=1, tensor_parallel_size=1))
    try:
        trainer, module, _ = _fit(strategy, 1, 2, tmp_path, False)
        trainer.save_checkpoint(tmp_path / "last.ckpt")
        yield trainer, module, tmp_path / "last.ckpt"
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        os.environ.clear()
        os.environ.update(environ)


def test_a_save_replaces_the_folder_whole_and_leaves_no_temp_folder(fsdp2):
    trainer, module, last = fsdp2
    assert type(trainer.strategy) is AtomicModelParallelStrategy
    assert is_complete_folder(last) and list(last.glob("*.distcp"))
    before = snapshot(last)
    with torch.no_grad():
        module.model.wte.weight.add_(1.0)
    trainer.save_checkpoint(last)
    assert snapshot(last) != before and is_complete_folder(last)
    assert sorted(os.listdir(last.parent)) == ["last.ckpt"]  # the old one and the staging: gone


def test_a_save_that_dies_part_way_leaves_the_previous_checkpoint(fsdp2, monkeypatch):
    """The save is cut short after one shard file is written (Lightning's own strategy writes it
    into last.ckpt, over the previous step's shard); the next save starts clean."""
    import lightning.pytorch.strategies.model_parallel as mp

    trainer, module, last = fsdp2
    before = snapshot(last)
    real = mp._distributed_checkpoint_save

    def dies(state, path):
        Path(path, "__0_0.distcp").write_bytes(b"half a shard")
        raise RuntimeError("killed")

    monkeypatch.setattr(mp, "_distributed_checkpoint_save", dies)
    with pytest.raises(RuntimeError, match="killed"):
        trainer.save_checkpoint(last)
    assert snapshot(last) == before
    assert staging_path(last).is_dir()  # what clean_stale removes at the next start
    monkeypatch.setattr(mp, "_distributed_checkpoint_save", real)
    trainer.save_checkpoint(last)
    assert _shards(last) == _shards_of(before)  # the same state again, from a clean staging
    assert sorted(os.listdir(last.parent)) == ["last.ckpt"]


def test_a_kill_between_the_renames_is_completed_at_the_next_start(tmp_path, monkeypatch):
    last = _folder(tmp_path / "last.ckpt", "step 3")
    new = _folder(staging_path(last), "step 6")
    renames = []
    real_rename = os.rename

    def first_only(src, dst):  # the process dies after the old folder is moved aside
        if renames:
            raise KeyboardInterrupt
        renames.append(dst)
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", first_only)
    with pytest.raises(KeyboardInterrupt):
        move_into_place(new, last)
    monkeypatch.setattr(os, "rename", real_rename)
    assert not last.exists()
    assert finish_interrupted_swaps(tmp_path) == [last]
    assert _mark(last) == "step 6"
    assert os.listdir(tmp_path) == ["last.ckpt"]
    assert finish_interrupted_swaps(tmp_path) == []  # a second rank finds it done


@pytest.mark.parametrize("case", ["both aside, the new one complete", "only the old complete",
                                  "already in place", "neither complete"])
def test_finish_interrupted_swaps_cases(tmp_path, case):
    last = tmp_path / "step=9.ckpt"
    old = tmp_path / ".loki-tmp-old-step=9.ckpt.part"
    _folder(old, "old")
    if case == "both aside, the new one complete":
        _folder(staging_path(last), "new")
    elif case == "already in place":
        _folder(last, "new")
    elif case == "neither complete":
        (old / "meta.pt").unlink()
        staging_path(last).mkdir()
    restored = finish_interrupted_swaps(tmp_path)
    if case == "neither complete":
        assert restored == [] and not last.exists() and old.exists()  # nothing guessed
        return
    assert restored == ([] if case == "already in place" else [last])
    assert _mark(last) == ("old" if case == "only the old complete" else "new")
    assert not old.exists()


def test_clean_stale_removes_a_staged_folder(tmp_path):
    last = _folder(tmp_path / "last.ckpt", "kept")
    staged = staging_path(last)
    staged.mkdir()
    (staged / "__0_0.distcp").write_text("half")
    assert atomic.clean_stale(tmp_path) == [staged]
    assert os.listdir(tmp_path) == ["last.ckpt"]


def test_adopt_only_lightnings_own_model_parallel_strategy():
    plain = ModelParallelStrategy(data_parallel_size=1, tensor_parallel_size=1)
    assert type(adopt(plain)) is AtomicModelParallelStrategy

    class Custom(ModelParallelStrategy):
        pass

    custom, ddp = Custom(), DDPStrategy()
    assert type(adopt(custom)) is Custom and type(adopt(ddp)) is DDPStrategy


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="needs /dev/shm (tmpfs) as TMPDIR")
def test_kills_during_fsdp2_saves_leave_a_loadable_last_ckpt(tmp_path):
    """`loki fit` under FSDP2 (one process), SIGKILLed at random instants up to 40 ms into a
    save of its last.ckpt folder (a save takes ~40 ms here) and resumed with --ckpt_path last,
    >= 8 times: after each kill last.ckpt equals the uninterrupted run's checkpoint at its step
    (weights and optimizer state), and the final resume ends equal to that run."""
    # launch_env: the other tests' in-process FSDP2 fits leave a launcher's variables behind
    env = launch_env(PYTHONPATH=str(ROOT), TORCHDYNAMO_DISABLE="1", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-m", "tests.helpers.kill_fit", str(tmp_path), "8",
                          "1", "40", *FSDP2], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["mid_write"] >= 8, result


@pytest.mark.parametrize("missing", [".metadata", "meta.pt"])
def test_an_incomplete_folder_is_refused_naming_the_last_good_one(tmp_path, missing):
    from loki.errors import LokiError
    from loki.preflight import check_checkpoint

    good = _folder(tmp_path / "step=6.ckpt", "step 6")
    cut = _folder(tmp_path / "step=9.ckpt", "step 9")
    (cut / missing).unlink()
    with pytest.raises(LokiError) as err:
        check_checkpoint(cut, resume=True)
    assert f"--ckpt_path {cut} is an incomplete distributed checkpoint" in str(err.value)
    assert f"the last good checkpoint in {tmp_path} is {good}" in str(err.value)
