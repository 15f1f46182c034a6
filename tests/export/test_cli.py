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
                                  "folder without checkpoint", "output under a file",
                                  "bad shard size", "zero shard size", "transformers weights",
                                  "transformers folder", "torch file without state_dict"])
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
    elif case in ("bad shard size", "zero shard size"):
        extra = ["--max_shard_size", "lots" if case == "bad shard size" else "0GB"]
    elif case in ("transformers weights", "transformers folder"):
        from safetensors.torch import save_file

        (tmp_path / "hf").mkdir()
        (tmp_path / "hf" / "config.json").write_text("{}")
        save_file({"lm_head.weight": torch.zeros(2, 2)}, tmp_path / "hf" / "model.safetensors")
        ckpt = str(tmp_path / "hf" / ("model.safetensors" if case == "transformers weights" else ""))
    elif case == "torch file without state_dict":
        torch.save({"weights": torch.zeros(2)}, tmp_path / "w.ckpt")
        ckpt = str(tmp_path / "w.ckpt")
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
    expected = {"output under a file": "a-file is a file, not a folder",
                "bad shard size": "--max_shard_size 'lots': give a size such as 5GB",
                "zero shard size": "--max_shard_size '0GB'",
                "transformers weights": "is a Hugging Face transformers model",
                "transformers folder": "is a Hugging Face transformers model",
                "torch file without state_dict": "is not a Lightning checkpoint"}
    assert expected.get(case, "") in err


@pytest.mark.parametrize("earlier", [False, True])
def test_folders_named_like_the_old_staging_folders_are_left_alone(earlier, trained_ckpt,
                                                                    tmp_path):
    from loki.export.hf import export_hf

    out = tmp_path / "hf"
    for name in ("hf.old", "hf.partial"):  # a user's folders, named as exports once named theirs
        (tmp_path / name).mkdir()
        (tmp_path / name / "notes.txt").write_text("mine")
    if earlier:
        export_hf(trained_ckpt, out)
    export_hf(trained_ckpt, out, max_shard_size="100KB")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "hf.old", "hf.partial"]
    assert all((tmp_path / n / "notes.txt").read_text() == "mine" for n in ("hf.old", "hf.partial"))
    assert (out / "model.safetensors.index.json").is_file()
    assert oct(out.stat().st_mode & 0o777) == oct(0o777 & ~_umask())  # not mkdtemp's 0700


@pytest.mark.parametrize("max_shard_size", ["5GB", "100KB"])
def test_every_exported_file_has_the_mode_a_plain_write_gives(max_shard_size, trained_ckpt,
                                                               tmp_path):
    from loki.export.hf import export_hf

    out = tmp_path / "hf"
    export_hf(trained_ckpt, out, max_shard_size=max_shard_size)
    (tmp_path / "plain").write_text("x")
    plain = oct((tmp_path / "plain").stat().st_mode & 0o777)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in out.iterdir()}
    assert any(n.endswith(".safetensors") for n in modes)  # safetensors writes mkstemp's 0600
    assert modes == dict.fromkeys(modes, plain)


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


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


def test_a_failed_final_rename_puts_the_earlier_export_back(tmp_path, monkeypatch):
    import os

    from loki.export import hf

    new, out = tmp_path / "staged", tmp_path / "hf"
    for folder, text in ((new, "new"), (out, "earlier")):
        folder.mkdir()
        (folder / "config.json").write_text(text)
    replace, calls = os.replace, []

    def second_fails(src, dst):
        calls.append(src)
        if len(calls) == 2:
            raise OSError(5, "Input/output error")
        replace(src, dst)

    monkeypatch.setattr(os, "replace", second_fails)
    with pytest.raises(OSError):
        hf._replace(new, out)
    assert (out / "config.json").read_text() == "earlier"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "staged"]


@pytest.mark.slow
def test_the_console_shows_no_torchao_kernel_load_failures(trained_ckpt, tmp_path):
    """transformers imports torchao when installed; torchao then prints its CUDA-only kernels
    as failing to load. The export uses no torchao, so its console should not show that."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("torchao")
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run([sys.executable, "-m", "loki.cli", "export", "hf", str(trained_ckpt),
                          "--output", str(tmp_path / "hf")], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(root)})
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Failed to load" not in run.stderr and "torchao" not in run.stderr
