"""OneShotBenchmarkEval: runs once at the end of fit, records it, refuses a second run."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch

from callbacks.benchmark_eval import CKPT_KEY, OneShotBenchmarkEval
from loki.errors import LokiError
from loki.eval.suite import SuiteConfig
from loki.module import LokiLM
from tests.eval.checkpoints import save_small_tokenizer, save_tiny_checkpoint
from tests.eval.conftest import _no_env_probe, _one_thread  # noqa: F401  (autouse fixtures)
from tests.helpers.synthetic import SyntheticSteps

pytest.importorskip("lm_eval")


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    """A 301-id tokenizer keeps the model and its checkpoints small (fast tests)."""
    return save_small_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tasks")
    for name, row in (("loki_demo_cloze", {"query": "Rain falls.", "choices": [" Yes.", " No."],
                                           "gold": 0}),
                      ("loki_demo_lastword", {"query": "The sky is", "answer": "blue"}),
                      ("loki_demo_pairs", {"query": "", "choices": ["Rain falls.", "Falls rain."],
                                           "gold": 0})):
        (root / name).mkdir()
        for split in ("train", "test"):
            (root / name / f"{split}.jsonl").write_text(
                "".join(json.dumps({"id": str(i), **row}) + "\n" for i in range(3)))
    return root


def _fit(tmp_path, callback, tok, logger=False):
    module = LokiLM("tiny", vocab_size=tok.vocab_size, tokenizer=str(tok.path))
    trainer = L.Trainer(max_steps=1, callbacks=[callback], default_root_dir=tmp_path,
                        logger=logger, enable_checkpointing=False, limit_val_batches=0,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(module, datamodule=SyntheticSteps(n_steps=1, vocab=tok.vocab_size, seq=8, micro=2))
    return trainer


def _callback(demo_data, out, **kw):
    suite = SuiteConfig(preset="demo", offline=True, data_dir=str(demo_data), limit=2,
                        bootstrap_iters=0)
    return OneShotBenchmarkEval(suite=suite, output_dir=str(out), batch_size=2, **kw)


def test_runs_once_records_and_force_overrides(tmp_path, demo_data, tok, capsys):
    out = tmp_path / "eval"
    _fit(tmp_path, _callback(demo_data, out), tok)
    results = json.loads((out / "results.json").read_text())
    said = capsys.readouterr().out  # the console says it runs, and where its results are
    assert "one-shot benchmark suite (demo): evaluating the final model ..." in said
    assert (f"one-shot benchmark suite: average {100 * results['average']:.2f} in "
            f"{results['seconds']:.0f} s; results in {out / 'results.md'}") in said
    assert set(results["rows"]) == {"Demo cloze", "Demo last word", "Demo minimal pairs"}
    assert results["forced"] is False and (out / "EVAL_DONE.json").is_file()
    assert "Demo cloze (0)" in (out / "results.md").read_text()
    # the evaluated weights carry the record
    ckpt = torch.load(out / "evaluated.ckpt", weights_only=False)
    assert ckpt[CKPT_KEY]["preset"] == "demo" and "model.wte.weight" in ckpt["state_dict"]

    # a second run into the same run folder is refused before training starts, saying how
    with pytest.raises(LokiError, match="already ran.*To run it again: set force: true and "
                                        "force_reason: '<why>' in OneShotBenchmarkEval's"):
        _fit(tmp_path, _callback(demo_data, out), tok)
    with pytest.raises(LokiError, match="force_reason"):
        _callback(demo_data, out, force=True)
    _fit(tmp_path, _callback(demo_data, out, force=True, force_reason="tokenizer bug fixed"), tok)
    forced = json.loads((out / "results.json").read_text())
    assert forced["forced"] is True and forced["force_reason"] == "tokenizer bug fixed"
    assert "Forced re-run" in (out / "results.md").read_text()


def test_record_in_callback_state_survives_resume(tmp_path, demo_data, tok):
    cb = _callback(demo_data, tmp_path / "a")
    cb.load_state_dict({"record": {"time": "earlier", "preset": "demo"}})  # as after a resume
    with pytest.raises(LokiError, match="already ran"):
        _fit(tmp_path, cb, tok)
    assert not (tmp_path / "a" / "results.json").exists()


def test_chosen_checkpoint_is_marked(tmp_path, demo_data, tok):
    path = save_tiny_checkpoint(tmp_path / "chosen.ckpt", tokenizer=str(tok.path),
                                vocab_size=tok.vocab_size)
    _fit(tmp_path, _callback(demo_data, tmp_path / "e1", checkpoint=str(path)), tok)
    assert torch.load(path, weights_only=False)[CKPT_KEY]["preset"] == "demo"
    results = json.loads((tmp_path / "e1" / "results.json").read_text())
    assert results["checkpoint"] == str(path)
    # a new run folder does not help: the checkpoint itself says it was evaluated
    with pytest.raises(LokiError, match="already ran"):
        _fit(tmp_path, _callback(demo_data, tmp_path / "e2", checkpoint=str(path)), tok)


def test_wandb_table_logged(tmp_path, demo_data, tok, monkeypatch):
    wandb = pytest.importorskip("wandb")
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    logger = WandbLogger(save_dir=str(tmp_path), project="loki-test")
    _fit(tmp_path, _callback(demo_data, tmp_path / "ev"), tok, logger=logger)
    run_dirs = list((tmp_path / "wandb").glob("offline-run-*"))
    wandb.finish()
    assert run_dirs
    tables = list(run_dirs[0].rglob("eval/table1*.table.json"))
    assert tables and "Demo cloze" in tables[0].read_text()


def _distributed_checkpoint(folder, tok):
    """A Lightning distributed checkpoint folder (``*.distcp`` + ``.metadata`` + ``meta.pt``),
    written by torch.distributed.checkpoint in one process, as ModelParallelStrategy lays it."""
    import torch.distributed.checkpoint as dcp

    module = LokiLM("tiny", vocab_size=tok.vocab_size, tokenizer=str(tok.path))
    dcp.save({"state_dict": module.state_dict()}, checkpoint_id=str(folder), no_dist=True)
    torch.save({"hyper_parameters": dict(module.hparams), "global_step": 3,
                "loki": {"tokens_seen": 0, "config": module.config.to_dict()}},
               folder / "meta.pt")
    return module


def test_distributed_checkpoint_folder_is_evaluated_and_marked(tmp_path, demo_data, tok):
    from callbacks.benchmark_eval import read_record
    from loki.module import load_model

    folder = tmp_path / "step=3.ckpt"
    module = _distributed_checkpoint(folder, tok)
    model, _, hparams = load_model(folder)  # consolidated on the fly, not torch.load on a folder
    torch.testing.assert_close(model.state_dict(), module.model.state_dict())
    assert hparams["tokenizer"] == str(tok.path)
    _fit(tmp_path, _callback(demo_data, tmp_path / "e1", checkpoint=str(folder)), tok)
    assert read_record(folder)["preset"] == "demo"  # the record went into its meta.pt
    with pytest.raises(LokiError, match="already ran"):
        _fit(tmp_path, _callback(demo_data, tmp_path / "e2", checkpoint=str(folder)), tok)
