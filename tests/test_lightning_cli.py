"""``loki fit`` loses nothing on a failed command (issue: metrics across resumes, validation
before anything changes, one-line errors, redaction, shard integrity).

Each failing command is run as a user runs it (``loki.cli.main``) on a copy of a real run
folder; the test asserts the one-line error, exit status 2 and that every file that was there
before is byte-identical afterwards.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import yaml

from loki.cli import main
from loki.errors import LokiError
from loki.metrics_csv import read_metrics, read_rows
from tests.helpers.fit_run import snapshot, write_run

SECRETS = {"api_key": "sk-live0123456789abcdef", "hf_token": "hf_abcdefghijklmnop1234",
           "password": "hunter2hunter2", "endpoint": "https://api.example.com/v1?key=sk-q0123456789abc",
           "mirror": "s3://bucket/x?X-Amz-Signature=abcdef0123456789&X-Amz-Date=1"}


def _fit(folder: Path, *args: str) -> None:
    main(["fit", "--config", str(folder / "run.yaml"), *args])


def _fails(capsys, folder: Path, *args: str) -> str:
    """Run a failing ``loki fit``: exit 2, no traceback, the error on one line; returns it."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        _fit(folder, *args)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("loki fit: error: "), line
    return line


# ----------------------------------------------------------------- 1: metrics across resumes
def test_metrics_csv_continuous_across_two_resumes(run, tmp_path):
    last = str(run / "run" / "checkpoints" / "last.ckpt")
    _fit(run, "--trainer.max_steps", "9", "--ckpt_path", last)
    _fit(run, "--ckpt_path", last)  # to 12
    straight = tmp_path / "straight"
    write_run(straight)
    _fit(straight)
    resumed = (run / "run" / "csv" / "metrics.csv").read_bytes()
    assert resumed == (straight / "run" / "csv" / "metrics.csv").read_bytes()
    rows = read_metrics(str(run / "run" / "csv" / "metrics.csv"))  # what `loki report` reads
    train = [int(r["step"]) for r in rows if "train/loss" in r]
    assert train == [1, 3, 5, 7, 9, 11]  # every logged step once, none missing


def test_metrics_flushed_at_every_logging_interval_and_cut_rows_dropped(tmp_path):
    from loki.metrics_log import ResumableCSVLogger

    logger = ResumableCSVLogger(str(tmp_path), name="csv", version="")
    logger.resume_at(0)
    for step in range(4):
        logger.log_metrics({"train/loss": float(step)}, step=step)
        assert len(read_rows(logger.experiment.metrics_file_path)[1]) == step + 1  # on disk now
    path = Path(logger.experiment.metrics_file_path)
    path.write_bytes(path.read_bytes() + b"4,0.12")  # a row cut short by a kill
    again = ResumableCSVLogger(str(tmp_path), name="csv", version="")
    again.resume_at(2)  # the checkpoint's step: rows 2 and 3 are done again
    again.log_metrics({"train/loss": 20.0}, step=2)
    header, rows = read_rows(str(path))
    assert [(r["step"], r["train/loss"]) for r in rows] == [("0", "0.0"), ("1", "1.0"),
                                                            ("2", "20.0")]
    assert path.read_bytes().endswith(b"\n")


# ----------------------------------------------------------------- 2, 3: bad --ckpt_path
def test_mistyped_ckpt_path_changes_nothing(capsys, run):
    before = snapshot(run)
    wrong = run / "run" / "checkpoints" / "lats.ckpt"
    err = _fails(capsys, run, "--ckpt_path", str(wrong))
    assert f"--ckpt_path {wrong} does not exist" in err
    assert "last good checkpoint" in err and "last.ckpt" in err
    assert snapshot(run) == before


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_truncated_or_empty_checkpoint_names_the_last_good_one(capsys, run, damage):
    last = run / "run" / "checkpoints" / "last.ckpt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"")
    before = snapshot(run)
    err = _fails(capsys, run, "--ckpt_path", str(last))
    assert f"checkpoint {last} is {damage}" in err
    assert f"the last good checkpoint in {last.parent} is {last.parent / 'step=6.ckpt'}" in err
    assert snapshot(run) == before


def test_checkpoint_of_another_model(capsys, run):
    ckpt = torch.load(run / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    name, weight = next((k, v) for k, v in ckpt["state_dict"].items() if v.dim() == 2)
    ckpt["state_dict"][name] = torch.zeros(weight.shape[0] * 2, weight.shape[1])
    other = run / "other.ckpt"  # another vocabulary, say
    torch.save(ckpt, other)
    before = snapshot(run)
    err = _fails(capsys, run, "--ckpt_path", str(other))
    assert f"checkpoint {other} is not of this model: {name} has shape" in err
    assert snapshot(run) == before


# ----------------------------------------------------------------- 6: unwritable folders
def test_unwritable_checkpoint_folder_fails_before_training(capsys, run):
    text = (run / "run.yaml").read_text()
    blocked = run / "web" / "manifest.json" / "checkpoints"  # a file where a folder must be
    (run / "run.yaml").write_text(text.replace(f"{run}/run/checkpoints", str(blocked)))
    before = snapshot(run)
    err = _fails(capsys, run, "--ckpt_path", str(run / "run" / "checkpoints" / "last.ckpt"))
    assert f"ModelCheckpoint dirpath {blocked}" in err and "not a folder" in err
    assert snapshot(run) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_run_folder_fails_before_training(capsys, run):
    ckpts = run / "run" / "checkpoints"
    before = snapshot(run)
    ckpts.chmod(0o555)
    try:
        err = _fails(capsys, run, "--ckpt_path", str(ckpts / "last.ckpt"))
    finally:
        ckpts.chmod(0o755)
    assert f"ModelCheckpoint dirpath {ckpts} is not writable" in err
    assert snapshot(run) == before


def test_writable_check_reports_permission_errors(tmp_path, monkeypatch):
    import tempfile

    from loki.preflight import check_writable

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(LokiError, match=r"out .* is not writable \(Permission denied in "):
        check_writable(tmp_path / "out", "out")
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------- 7: data.tokenizer unset
def test_tokenizer_taken_from_the_shards_with_a_logger(base_run):
    hparams = yaml.safe_load((base_run / "run" / "csv" / "hparams.yaml").read_text())
    assert hparams["tokenizer"] == "test-256"  # logged once, by model and data alike
    ckpt = torch.load(base_run / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 6
    assert ckpt["datamodule_hyper_parameters"]["tokenizer"] == "test-256"


# ----------------------------------------------------------------- 8: secrets
def test_secrets_redacted_in_config_yaml_and_checkpoints(tmp_path):
    callback = ("    - class_path: callbacks.wandb_dashboard.WandbDashboard\n"
                f"      init_args: {{extra_config: {json.dumps(SECRETS)}}}\n")
    write_run(tmp_path, max_steps=1, every=1, extra_callbacks=callback)
    _fit(tmp_path)
    written = b"".join(p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file())
    assert b"[redacted]" in (tmp_path / "run" / "csv" / "config.yaml").read_bytes()
    for value in SECRETS.values():
        secret = value.split("=")[1].split("&")[0] if "=" in value else value
        assert secret.encode() not in written, secret
    config = yaml.safe_load((tmp_path / "run" / "csv" / "config.yaml").read_text())
    extra = config["trainer"]["callbacks"][1]["init_args"]["extra_config"]
    assert extra["endpoint"] == "https://api.example.com/v1?key=[redacted]"
    assert extra["mirror"] == "s3://bucket/x?X-Amz-Signature=[redacted]&X-Amz-Date=1"


def test_checkpoint_hyper_parameters_redacted(tmp_path):
    from loki.checkpoint_io import AtomicCheckpointIO

    path = tmp_path / "c.ckpt"
    AtomicCheckpointIO().save_checkpoint(
        {"state_dict": {"w": torch.ones(2)}, "hyper_parameters": {"teacher": dict(SECRETS)},
         "datamodule_hyper_parameters": {"sources": {"web": [SECRETS["mirror"]]}}}, path)
    saved = torch.load(path, weights_only=False)
    assert saved["hyper_parameters"]["teacher"]["api_key"] == "[redacted]"
    assert saved["hyper_parameters"]["teacher"]["endpoint"].endswith("?key=[redacted]")
    assert "abcdef0123456789" not in json.dumps(saved["datamodule_hyper_parameters"])
    assert torch.equal(saved["state_dict"]["w"], torch.ones(2))


def test_redaction_rules():
    from loki.redact import REDACTED, redact, redact_text

    assert redact(SECRETS) == {
        "api_key": REDACTED, "hf_token": REDACTED, "password": REDACTED,
        "endpoint": "https://api.example.com/v1?key=[redacted]",
        "mirror": "s3://bucket/x?X-Amz-Signature=[redacted]&X-Amz-Date=1"}
    assert redact_text("https://user:pw1234@host/x") == "https://user:[redacted]@host/x"
    assert redact_text("Authorization: Bearer abcdefgh12345678") == \
        "Authorization: Bearer [redacted]"
    assert redact_text("run with sk-abcdefghijkl0123 now") == "run with [redacted] now"
    keep = {"tokenizer": "data/demo/tokenizer", "url": "https://x.org/a?page=2&sort=asc",
            "max_new_tokens": 8, "tokens_seen": 5}
    assert redact(keep) == keep


def test_wandb_run_config_redacts_urls():
    from types import SimpleNamespace

    from callbacks.wandb_dashboard import WandbDashboard

    trainer = SimpleNamespace(datamodule=None, callbacks=[])
    config = WandbDashboard(extra_config=dict(SECRETS)).run_config(
        trainer, SimpleNamespace(hparams={}))
    text = json.dumps(config)
    assert "sk-q0123456789abc" not in text and "hunter2" not in text
    assert config["endpoint"] == "https://api.example.com/v1?key=[redacted]"


# ----------------------------------------------------------------- 9: smaller findings
def test_bit_flipped_shard_refused_by_default(capsys, run):
    shard = sorted((run / "web").glob("*.tokens"))[1]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01  # same size, one bit different
    shard.write_bytes(bytes(data))
    before = snapshot(run)
    err = _fails(capsys, run, "--ckpt_path", str(run / "run" / "checkpoints" / "last.ckpt"))
    assert f"checksum mismatch for {shard}" in err
    assert snapshot(run) == before


def test_yaml_parse_error_names_the_file(capsys, tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("model:\n  config: tiny\n data: [\n")
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(bad)])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and "<unicode string>" not in err[0], err


def test_loki_debug_shows_the_traceback(run, monkeypatch):
    monkeypatch.setenv("LOKI_DEBUG", "1")
    with pytest.raises(LokiError, match="does not exist"):
        _fit(run, "--ckpt_path", str(run / "nope.ckpt"))


@pytest.mark.parametrize("tool", ["report", "tokenize", "filter"])
def test_tool_config_errors_are_one_line_naming_the_file(capsys, tmp_path, tool):
    bad = tmp_path / "broken.yaml"
    bad.write_text("run_dir: x\n data: [\n")
    for config, expected in ((bad, f"in {bad}, line 2"), (tmp_path / "nope.yaml", "nope.yaml")):
        capsys.readouterr()
        with pytest.raises(SystemExit) as info:
            main([tool, "--config", str(config)])
        assert info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"loki {tool}: error: "), err
        assert expected in err[0], err
