"""Files that are not Lightning checkpoints of a LokiLM are refused in one line naming the file,
by ``load_model`` and, without reading the weights, by ``inspect_checkpoint``."""

from __future__ import annotations

import json

import pytest
import torch

from loki.checkpoint_read import inspect_checkpoint
from loki.errors import LokiError
from loki.module import LokiLM, load_model


def _lightning(**changes) -> dict:
    module = LokiLM("tiny", config_overrides={"n_layer": 1})
    ckpt = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
            "loki": {"tokens_seen": 0, "config": module.config.to_dict()}}
    ckpt.update(changes)
    return ckpt


def _save(path, obj):
    torch.save(obj, path)
    return path


def _both(path, match):
    for read in (load_model, inspect_checkpoint):
        with pytest.raises(LokiError, match=match) as info:
            read(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_lightning_checkpoint_passes_both(tmp_path):
    path = _save(tmp_path / "ok.ckpt", _lightning())
    config, hparams = inspect_checkpoint(path)
    assert config.n_layer == 1 and hparams["config_overrides"] == {"n_layer": 1}
    assert load_model(path)[1] == config


def test_a_transformers_export_says_how_to_load_it(tmp_path):
    from safetensors.torch import save_file

    folder = tmp_path / "hf"
    folder.mkdir()
    save_file({"lm_head.weight": torch.zeros(2, 2)}, folder / "model.safetensors")
    (folder / "loki_export.json").write_text(json.dumps({"checkpoint": "runs/x/last.ckpt"}))
    (folder / "weights.bin").write_bytes((folder / "model.safetensors").read_bytes())
    for path in (folder / "model.safetensors", folder / "weights.bin"):  # by suffix, by header
        _both(path, r"Hugging Face transformers model.*from_pretrained\('.*hf', "
                    r"trust_remote_code=True\).*loki_export.json names runs/x/last.ckpt\)")


@pytest.mark.parametrize("case, match", [
    ("no state_dict", "not a Lightning checkpoint"),
    ("not a dict", "not a Lightning checkpoint"),
    ("foreign keys", "holds no Loki weights"),
    ("wrong shape", r"does not hold the weights.*missing: blocks\.1\."),
    ("no config", "records no model config"),
    ("bad config", "records a model config that cannot be built"),
    ("garbage", "cannot read checkpoint"),
])
def test_other_files_are_refused_in_one_line(case, match, tmp_path):
    path = tmp_path / "x.ckpt"
    if case == "no state_dict":
        _save(path, {"weights": torch.zeros(2)})
    elif case == "not a dict":
        _save(path, [torch.zeros(2)])
    elif case == "foreign keys":
        _save(path, _lightning(state_dict={"encoder.weight": torch.zeros(2)}))
    elif case == "wrong shape":  # the config says two blocks, the weights hold one
        ckpt = _lightning()
        ckpt["loki"]["config"]["n_layer"] = 2
        _save(path, ckpt)
    elif case == "no config":  # used to be loaded as the `tiny` config and fail on its shapes
        ckpt = _lightning(hyper_parameters={})
        del ckpt["loki"]
        _save(path, ckpt)
    elif case == "bad config":
        ckpt = _lightning()
        ckpt["loki"]["config"]["n_embd"] = 65
        _save(path, ckpt)
    else:
        path.write_bytes(b"PK\x03\x04 not really a zip")
    _both(path, match)


def test_a_run_folder_is_its_last_checkpoint_in_every_reader(tmp_path, capsys):
    from loki.export.hf import resolved_checkpoint

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    last = _save(run / "checkpoints" / "last.ckpt", _lightning())
    config = load_model(run)[1]
    assert inspect_checkpoint(run)[0] == config
    with resolved_checkpoint(run) as (taken, distributed):
        assert (taken, distributed) == (last, None)
    said = capsys.readouterr().err.splitlines()
    assert said == [f"{run} is a run folder: using its checkpoint {last}"] * 3


def test_a_folder_that_is_neither_checkpoint_nor_run_names_the_file_to_pass(tmp_path):
    (tmp_path / "notes").mkdir()
    _both(tmp_path / "notes", r"neither a distributed checkpoint \(no \.metadata inside\) nor a "
                              r"run folder \(no checkpoints/last\.ckpt inside\); pass a \.ckpt "
                              r"file such as runs/<run>/checkpoints/last\.ckpt")
