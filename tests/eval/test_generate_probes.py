"""loki generate and loki probe on a tiny checkpoint."""

from __future__ import annotations

import json

import pytest

from loki.errors import LokiError
from loki.eval.generate import SamplingConfig, read_prompts, sample
from loki.eval.loading import load_for_eval
from loki.eval.probes import STEREOTYPE, bias_prompts
from loki.eval.probes import main as probe_main
from tests.eval.checkpoints import save_small_tokenizer, save_tiny_checkpoint


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("small")
    tok = save_small_tokenizer(d / "tok")
    return save_tiny_checkpoint(d / "m.ckpt", tokenizer=str(tok.path), vocab_size=tok.vocab_size)


def test_sampling_is_seeded_and_stops(small_ckpt, tmp_path):
    em = load_for_eval(small_ckpt)
    cfg = SamplingConfig(max_new_tokens=10, temperature=1.0, top_k=50, num_samples=3, seed=7)
    first = sample(em, ["Hello", "Another prompt"], cfg)
    assert first == sample(em, ["Hello", "Another prompt"], cfg)
    assert len(first[0]["samples"]) == 3 and first[0]["samples"][0] != first[0]["samples"][1]
    text = first[0]["samples"][0]
    stop = text[3:5]
    cut = sample(em, ["Hello"], SamplingConfig(**{**vars(cfg), "stop": [stop]}))[0]["samples"]
    assert cut[0] == text[: text.find(stop)]
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "a"}\n{"prompt": "b c"}\n')
    assert read_prompts(f) == ["a", "b c"]
    f.write_text("not json\n")
    with pytest.raises(LokiError, match="JSON object"):
        read_prompts(f)


def test_bias_template_orderings():
    items = bias_prompts()
    assert len(items) == 4
    assert {(tuple(i["occupations"]), tuple(i["pronouns"])) for i in items} == {
        (o, p) for o in (("lawyer", "secretary"), ("secretary", "lawyer"))
        for p in (("He", "She"), ("She", "He"))}
    assert "returns to her desk" in next(i["prompt"] for i in items if i["pronouns"][1] == "She")


def test_probe_cli_writes_json_and_markdown(small_ckpt, tmp_path):
    probe_main(["--checkpoint", str(small_ckpt), "--sampling.max_new_tokens", "6",
                "--device", "cpu", "--output_dir", str(tmp_path)])
    result = json.loads((tmp_path / "probes.json").read_text())
    assert set(result["prompts"]) == {"history", "science", "code", "creative", "truthfulness"}
    rows = result["bias"]["orderings"]
    consistent = [r["resolved"] == STEREOTYPE[r["pronouns"][1]] for r in rows]
    assert result["bias"]["stereotype_consistent_share"] == sum(consistent) / 4
    md = (tmp_path / "probes.md").read_text()
    assert f"**{sum(consistent)}/4**" in md and "def factorial(n):" in md


@pytest.mark.parametrize("field, value, match", [
    ("temperature", -1.0, r"sampling\.temperature must be >= 0 \(0 is greedy\), got -1"),
    ("top_k", 0, r"sampling\.top_k must be >= 1"),
    ("top_p", 0.0, r"sampling\.top_p must be in \(0, 1\]"),
    ("top_p", 1.5, r"sampling\.top_p must be in \(0, 1\]"),
    ("num_samples", 0, r"sampling\.num_samples must be >= 1"),
])
def test_sampling_settings_are_checked_before_anything_runs(field, value, match):
    with pytest.raises(LokiError, match=match):
        SamplingConfig(**{field: value})
    SamplingConfig(temperature=0.0, top_k=1, top_p=1.0)  # the edges are allowed


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "tpu", "meta"])
def test_an_unknown_device_lists_the_valid_ones(device):
    from loki.eval.loading import resolve_device

    with pytest.raises(LokiError, match=f"unknown device '{device}'; choose one of: auto, cpu, "
                                        "cuda, cuda:N"):
        resolve_device(device)


def _cli(argv, capsys):
    """``loki`` with ``argv``: (exit code, stdout, stderr)."""
    from loki.cli import main

    try:
        main(argv)
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    out, err = capsys.readouterr()
    return code, out, err.strip()


def test_generate_prints_then_writes_the_output_atomically(small_ckpt, tmp_path, capsys,
                                                           monkeypatch):
    out = tmp_path / "gen.jsonl"
    argv = ["generate", "--checkpoint", str(small_ckpt), "--prompt+", "Hello", "--device", "cpu",
            "--sampling.max_new_tokens", "4", "--sampling.num_samples", "2", "--output", str(out)]
    code, printed, _ = _cli(argv, capsys)
    assert code == 0 and printed.count("--- 'Hello'") == 2 and f"to {out}" in printed
    row = json.loads(out.read_text())
    assert row["prompt"] == "Hello" and len(row["samples"]) == 2

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.fsync", full_disk)
    code, printed, err = _cli(argv, capsys)
    assert code == 2 and printed.count("--- 'Hello'") == 2  # the samples are not lost
    assert err == (f"loki generate: error: cannot write {out} (No space left on device; "
                   "gen.jsonl is left as it was); the samples are printed above")
    assert json.loads(out.read_text()) == row and sorted(tmp_path.iterdir()) == [out]


def test_generate_takes_a_run_folder_as_export_does_and_says_which_checkpoint(
        small_ckpt, tmp_path, capsys):
    import shutil

    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    shutil.copy(small_ckpt, last)
    out = tmp_path / "gen.jsonl"
    code, printed, err = _cli(["generate", "--checkpoint", str(tmp_path / "run"), "--prompt+",
                               "Hello", "--device", "cpu", "--sampling.max_new_tokens", "2",
                               "--output", str(out)], capsys)
    assert code == 0 and printed.count("--- 'Hello'") == 1
    assert err == f"{tmp_path / 'run'} is a run folder: using its checkpoint {last}"
    assert json.loads(out.read_text())["checkpoint"] == str(last)  # recorded as taken


@pytest.mark.parametrize("case", ["output is the checkpoint", "output is the prompts file",
                                  "output under a file", "output is a folder", "no prompts",
                                  "prompts not UTF-8", "prompts is a folder", "bad sampling"])
def test_generate_refuses_bad_input_before_loading(case, small_ckpt, tmp_path, capsys,
                                                   monkeypatch):
    import shutil

    def no_loading(*args, **kwargs):
        raise AssertionError("the checkpoint was loaded")

    monkeypatch.setattr("loki.eval.loading.load_for_eval", no_loading)
    ckpt = str(shutil.copy(small_ckpt, tmp_path / "copy.ckpt"))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Hello\n")
    (tmp_path / "afile").write_text("mine")
    argv = ["generate", "--checkpoint", ckpt, "--prompts", str(prompts), "--output",
            str(tmp_path / "gen.jsonl")]
    expected = {
        "output is the checkpoint": "is the checkpoint", "output is the prompts file":
        "is the prompts file", "output under a file": "afile is a file, not a folder",
        "output is a folder": "is a folder; give a file name", "no prompts": "no prompts: "
        "pass --prompt+ TEXT (once per prompt) or --prompts FILE", "prompts not UTF-8":
        "is not UTF-8 text (byte 0", "prompts is a folder": "is a folder; give a text",
        "bad sampling": "sampling.top_p must be in (0, 1]"}[case]
    if case == "output is the checkpoint":
        argv[-1] = ckpt
    elif case == "output is the prompts file":
        argv[-1] = str(prompts)
    elif case == "output under a file":
        argv[-1] = str(tmp_path / "afile" / "gen.jsonl")
    elif case == "output is a folder":
        argv[-1] = str(tmp_path)
    elif case == "no prompts":
        argv = argv[:3] + argv[5:]
    elif case == "prompts not UTF-8":
        prompts.write_bytes(b"\xff\xfeHello\n")
    elif case == "prompts is a folder":
        argv[4] = str(tmp_path)
    else:
        argv += ["--sampling.top_p", "0"]
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    code, _, err = _cli(argv, capsys)
    assert code == 2 and err.startswith("loki generate: error: ") and "\n" not in err
    assert expected in err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_read_prompts_names_the_bad_line(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "a"}\n\n{"prompt": 3}\n')
    with pytest.raises(LokiError, match=r"p\.jsonl, line 3: .*'prompt' string"):
        read_prompts(f)
    f.write_text("\n  \n")
    with pytest.raises(LokiError, match="holds no prompts"):
        read_prompts(f)


def test_probe_refuses_an_output_dir_that_is_a_file_before_loading(small_ckpt, tmp_path, capsys,
                                                                   monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("the checkpoint was loaded")

    monkeypatch.setattr("loki.eval.loading.load_for_eval", no_loading)
    (tmp_path / "afile").write_text("mine")
    code, _, err = _cli(["probe", "--checkpoint", str(small_ckpt), "--output_dir",
                         str(tmp_path / "afile")], capsys)
    assert code == 2 and "\n" not in err and "afile is a file, not a folder" in err
    assert (tmp_path / "afile").read_text() == "mine"


def test_probe_keeps_the_earlier_pair_when_a_write_fails(small_ckpt, tmp_path, capsys,
                                                         monkeypatch):
    argv = ["probe", "--checkpoint", str(small_ckpt), "--sampling.max_new_tokens", "2",
            "--device", "cpu", "--output_dir", str(tmp_path)]
    assert _cli(argv, capsys)[0] == 0
    earlier = {p.name: p.read_text() for p in tmp_path.iterdir()}
    assert set(earlier) == {"probes.json", "probes.md"}
    import os

    fsync, calls = os.fsync, []

    def second_file_fails(fd):  # probes.json is written, then the disk is full
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        fsync(fd)

    monkeypatch.setattr("os.fsync", second_file_fails)
    code, printed, err = _cli([*argv[:3], "--sampling.max_new_tokens", "3", *argv[5:]], capsys)
    assert code == 2 and "# Probes" in printed and "the probes are printed above" in err
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == earlier


def test_a_cuda_index_beyond_the_machine_is_refused(monkeypatch):
    import torch

    from loki.eval.loading import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(LokiError, match="this machine has 1 CUDA device"):
        resolve_device("cuda:1")


@pytest.mark.parametrize("tool", ["generate", "probe"])
def test_the_hints_name_the_options_as_typed(tool, small_ckpt, tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = [tool, "--checkpoint", str(small_ckpt), "--device", "cuda"]
    argv += ["--prompt+", "Hello"] if tool == "generate" else ["--output_dir", str(tmp_path)]
    code, _, err = _cli(argv, capsys)
    assert code == 2 and err == (f"loki {tool}: error: device 'cuda' asked for but CUDA is not "
                                 "available; use --device cpu")
    ckpt = torch.load(small_ckpt, weights_only=False)
    ckpt["hyper_parameters"].pop("tokenizer")
    torch.save(ckpt, tmp_path / "no-tokenizer.ckpt")
    argv[2:5] = [str(tmp_path / "no-tokenizer.ckpt"), "--device", "cpu"]
    code, _, err = _cli(argv, capsys)
    assert code == 2 and err.endswith("records no tokenizer; pass --tokenizer <spec>")
