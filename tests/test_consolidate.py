"""``loki consolidate`` on a small distributed checkpoint saved in one process: what it writes,
and the refusals and failures that leave the disk as it was (the 2-process FSDP2 run that
consolidates a real training checkpoint is in test_sharding.py)."""

from __future__ import annotations

import pytest
import torch

from loki.checkpoint_read import inspect_checkpoint
from loki.cli import main as cli_main
from loki.consolidate import consolidate
from loki.errors import LokiError
from loki.module import LokiLM, load_model


@pytest.fixture
def distributed(tmp_path):
    """The layout Lightning's ModelParallelStrategy saves: DCP shards of the state dict and a
    ``meta.pt`` with everything else."""
    import torch.distributed.checkpoint as dcp

    module = LokiLM("tiny", config_overrides={"n_layer": 1})
    folder = tmp_path / "step3"
    dcp.save({"state_dict": module.state_dict()}, checkpoint_id=folder)
    torch.save({"hyper_parameters": dict(module.hparams),
                "loki": {"tokens_seen": 3, "config": module.config.to_dict()}}, folder / "meta.pt")
    return folder


def _listing(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_consolidate_writes_one_loadable_file_and_nothing_else(distributed, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "last.ckpt.partial").write_text("mine")  # a user's file with the old temp name
    (out / "last.ckpt").write_text("an earlier output")
    consolidate(distributed, out / "last.ckpt")
    assert _listing(out) == ["last.ckpt", "last.ckpt.partial"]
    assert (out / "last.ckpt.partial").read_text() == "mine"
    model, config, _ = load_model(out / "last.ckpt")
    assert config.n_layer == 1
    assert load_model(distributed)[1] == config  # a folder is consolidated on the fly
    assert inspect_checkpoint(distributed)[0] == config  # read from meta.pt alone


def test_a_failed_write_keeps_the_earlier_output(distributed, tmp_path, monkeypatch):
    out = tmp_path / "last.ckpt"
    out.write_text("an earlier output")
    before = _listing(tmp_path)

    save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        if isinstance(f, str):  # the merge's intermediate file
            return save(obj, f, *args, **kwargs)
        f.write(b"half a checkpoint")
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(LokiError, match=f"cannot write {out}: .*unexpected pos"):
        consolidate(distributed, out)
    assert out.read_text() == "an earlier output" and _listing(tmp_path) == before


@pytest.mark.parametrize("case", ["missing", "no meta.pt", "truncated shard", "output under a file",
                                  "output is a folder", "transformers folder"])
def test_bad_input_exits_2_in_one_line_and_writes_nothing(case, distributed, tmp_path, capsys):
    src, out = distributed, tmp_path / "out" / "x.ckpt"
    if case == "missing":
        src = tmp_path / "setp3"
    elif case == "no meta.pt":
        (src / "meta.pt").unlink()
    elif case == "truncated shard":
        shard = next(src.glob("*.distcp"))
        shard.write_bytes(shard.read_bytes()[:200])
    elif case == "output under a file":
        (tmp_path / "afile").write_text("mine")
        out = tmp_path / "afile" / "x.ckpt"
    elif case == "output is a folder":
        out = tmp_path / "out"
        out.mkdir()
    else:
        src = tmp_path / "hf"
        src.mkdir()
        (src / "config.json").write_text("{}")
    before = _listing(tmp_path)
    with pytest.raises(SystemExit) as info:
        cli_main(["consolidate", str(src), "--output", str(out)])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("loki consolidate: error:") and "\n" not in err
    assert _listing(tmp_path) == before
    expected = {"missing": f"checkpoint folder not found: {src}",
                "no meta.pt": "has no meta.pt", "truncated shard": f"cannot read the "
                f"distributed checkpoint {src}", "output under a file": "afile is a file",
                "output is a folder": "is a folder; give a file name",
                "transformers folder": "Hugging Face transformers model"}[case]
    assert expected in err


def test_a_single_checkpoint_file_needs_no_consolidation(distributed, tmp_path, capsys):
    single = tmp_path / "step-0.ckpt"
    consolidate(distributed, single)
    before = _listing(tmp_path)
    with pytest.raises(SystemExit) as info:
        cli_main(["consolidate", str(single)])
    assert info.value.code == 2 and _listing(tmp_path) == before
    assert capsys.readouterr().err.strip() == (
        f"loki consolidate: error: {single} is already a single checkpoint file: use it as is "
        "(generate, probe, compare, eval and export read it); there is nothing to consolidate")


def test_a_run_folder_consolidates_its_distributed_last_checkpoint(distributed, tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    distributed.rename(run / "checkpoints" / "last.ckpt")
    cli_main(["consolidate", str(run)])
    out = run / "checkpoints" / "last.ckpt.consolidated.ckpt"
    assert load_model(out)[2]["config_overrides"] == {"n_layer": 1}
    assert capsys.readouterr().err.strip() == (
        f"{run} is a run folder: using its checkpoint {run / 'checkpoints' / 'last.ckpt'}")
