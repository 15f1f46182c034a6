"""``loki export hf`` from the command line: any checkpoint form, sharding, ``--check``, and
refusals that leave the disk as it was."""

from __future__ import annotations

import json
import re

import pytest
import torch

from loki.cli import main


def _distributed(ckpt, folder):
    """The layout Lightning's ModelParallelStrategy saves: DCP shards of the state dict and a
    ``meta.pt`` with everything else."""
    import torch.distributed.checkpoint as dcp

    raw = torch.load(ckpt, weights_only=False)
    dcp.save({"state_dict": raw.pop("state_dict")}, checkpoint_id=folder)
    torch.save(raw, folder / "meta.pt")
    return folder


def test_distributed_checkpoint_sharded_export_with_check(trained_ckpt, tmp_path, capsys):
    src = _distributed(trained_ckpt, tmp_path / "step40")
    out = tmp_path / "hf"
    main(["export", "hf", str(src), "--output", str(out), "--max_shard_size", "100KB",
          "--check"])
    printed = capsys.readouterr().out
    diff = float(re.search(r"max abs logit difference (\S+)", printed).group(1))
    assert diff <= 1e-5 and "tokenizer ids identical" in printed
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1  # sharded above 100KB
    manifest = json.loads((out / "loki_export.json").read_text())
    assert manifest["consolidated_from"] == str(src)
    assert manifest["check"]["max_abs_logit_diff"] == pytest.approx(diff, rel=1e-2)
    assert not list(tmp_path.glob("hf.*"))  # no partial or old folder left behind

    # a run folder resolves to its last checkpoint; the earlier (sharded) export is replaced
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").symlink_to(trained_ckpt)
    main(["export", "hf", str(run), "--output", str(out), "--dtype", "bfloat16"])
    assert (out / "model.safetensors").is_file()
    assert not (out / "model.safetensors.index.json").exists()
    manifest = json.loads((out / "loki_export.json").read_text())
    assert manifest["dtype"] == "bfloat16" and "check" not in manifest
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"


def test_bf16_export_checks_against_loki_rounded_to_bf16(trained_ckpt, tmp_path):
    from loki.export.hf import check_export
    from loki.module import load_model

    model, _, _ = load_model(trained_ckpt)
    main(["export", "hf", str(trained_ckpt), "--output", str(tmp_path / "hf"),
          "--dtype", "bfloat16"])
    assert check_export(tmp_path / "hf", model, _tokenizer(trained_ckpt))[
        "max_abs_logit_diff"] <= 1e-5
    assert next(model.parameters()).dtype == torch.float32  # the caller's model is untouched


def _tokenizer(ckpt):
    from loki.tokenizer import LokiTokenizer

    return LokiTokenizer.from_spec(torch.load(ckpt, weights_only=False)["hyper_parameters"][
        "tokenizer"])


@pytest.mark.parametrize("case", ["foreign folder", "missing checkpoint", "bad dtype",
                                  "folder without checkpoint", "output under a file"])
def test_bad_input_exits_2_and_writes_nothing(case, trained_ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    ckpt, extra = str(trained_ckpt), []
    if case == "output under a file":
        (tmp_path / "a-file").write_text("mine")
        out = tmp_path / "a-file" / "sub" / "hf"
    elif case == "foreign folder":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    elif case == "missing checkpoint":
        ckpt = str(tmp_path / "nope.ckpt")
    elif case == "bad dtype":
        extra = ["--dtype", "int8"]
    else:
        (tmp_path / "empty").mkdir()
        ckpt = str(tmp_path / "empty")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "hf", ckpt, "--output", str(out), *extra])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("loki export: error:") and "\n" not in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    if case == "output under a file":
        assert "its parent folder" in err and "a-file is a file, not a folder" in err


def test_check_refuses_a_wrong_conversion_and_keeps_the_earlier_export(trained_ckpt, tmp_path,
                                                                       monkeypatch):
    import loki.export.hf as hf
    from loki.errors import LokiError

    out = tmp_path / "hf"
    hf.export_hf(trained_ckpt, out)
    earlier = (out / "model.safetensors").read_bytes()
    convert = hf.hf_state_dict

    def swapped_halves(state, config):  # gate and up exchanged: a plausible conversion slip
        out = convert(state, config)
        out["model.layers.0.mlp.gate_proj.weight"], out["model.layers.0.mlp.up_proj.weight"] = (
            out["model.layers.0.mlp.up_proj.weight"], out["model.layers.0.mlp.gate_proj.weight"])
        return out

    monkeypatch.setattr(hf, "hf_state_dict", swapped_halves)
    with pytest.raises(LokiError, match="logits differ from Loki's"):
        hf.export_hf(trained_ckpt, out, check=True)
    assert (out / "model.safetensors").read_bytes() == earlier
    assert not list(tmp_path.glob("hf.*"))
