"""``loki fit`` refuses, in one line and before the model is built, a config this machine cannot
run: a GPU accelerator without a GPU, parallel sizes that do not make the world size, a model
whose training state cannot fit in the memory available on CPUs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from loki import preflight_config
from loki.errors import LokiError
from loki.preflight_config import check_config
from tests.test_lightning_cli import _fails

ROOT = Path(__file__).resolve().parents[1]
MODEL_PARALLEL = {"class_path": "lightning.pytorch.strategies.ModelParallelStrategy",
                  "init_args": {"data_parallel_size": 8, "tensor_parallel_size": 1}}


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_gpu_accelerator_without_a_gpu():
    with pytest.raises(LokiError, match="trainer.accelerator gpu but this machine has no CUDA"):
        check_config({"trainer": {"accelerator": "gpu", "devices": 8}}, "fit")


def test_parallel_sizes_must_make_the_world_size():
    trainer = {"accelerator": "cpu", "devices": 1, "num_nodes": 1, "strategy": MODEL_PARALLEL}
    with pytest.raises(LokiError, match=r"data_parallel_size 8 x tensor_parallel_size 1 = 8 "
                                        r"processes, but trainer.devices 1 x trainer.num_nodes "
                                        r"1 = 1"):
        check_config({"trainer": trainer}, "validate")
    check_config({"trainer": {**trainer, "devices": 4, "num_nodes": 2}}, "validate")


def test_model_too_large_for_this_machine(monkeypatch):
    monkeypatch.setattr(preflight_config, "available_memory", lambda: 8 * 10**9)
    config = {"trainer": {"accelerator": "cpu", "devices": 1},
              "model": {"config": "loki-1.4b",
                        "optimizer": {"class_path": "loki.precision.AdamW8bit"}},
              "data": {"block_size": 2048, "micro_batch_size": 8}}
    with pytest.raises(LokiError, match=r"needs at least .* GB \(1\.\d+B parameters x 10 bytes "
                                        r".* this machine has 8\.0 GB of memory available"):
        check_config(config, "fit")
    check_config({**config, "model": {"config": "tiny"}}, "fit")  # small enough
    check_config(config, "validate")  # no training state


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_recipe_on_a_cpu_machine_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the recipe's relative paths: nothing exists here
    folder = tmp_path / "cfg"
    folder.mkdir()
    (folder / "run.yaml").write_text((ROOT / "experiments" / "loki-1.4b.yaml").read_text())
    err = _fails(capsys, folder)
    assert "no CUDA GPU" in err
    err = _fails(capsys, folder, "--trainer.accelerator", "cpu", "--trainer.devices", "1")
    assert "data_parallel_size 8" in err
    assert not (tmp_path / "runs" / "loki-1.4b").exists()


def test_the_data_is_checked_before_the_distillation_cache(tmp_path, monkeypatch):
    """Before the demo's data is made, the first thing to fix is named first."""
    monkeypatch.chdir(tmp_path)
    trainer = {"accelerator": "cpu", "callbacks": [{
        "class_path": "callbacks.distillation.TeacherDistillation",
        "init_args": {"cache": "data/demo/distill/cache"}}]}
    data = {"sources": {"web": ["data/demo/shards/web", "s3://bucket/web"],
                        "wiki": "data/wiki/*/manifest.json"}, "tokenizer": "data/tok"}
    with pytest.raises(LokiError, match=r"^token shards not found: data/demo/shards/web "
                                        r"\(data.sources\); make them with loki tokenize"):
        check_config({"trainer": trainer, "data": data}, "fit")
    (tmp_path / "data" / "demo" / "shards" / "web").mkdir(parents=True)
    with pytest.raises(LokiError, match=r"^tokenizer not found: data/tok \(data.tokenizer\)"):
        check_config({"trainer": trainer, "data": data}, "fit")
    with pytest.raises(LokiError, match="no distillation cache at data/demo/distill/cache"):
        check_config({"trainer": trainer, "data": {**data, "tokenizer": "cl100k_base"}}, "fit")
