"""InitialCheckpoint: the weights before the first step, written once."""

from __future__ import annotations

import lightning as L
import torch

from callbacks.initial_checkpoint import InitialCheckpoint
from loki.module import LokiLM, load_model
from tests.helpers.synthetic import SyntheticSteps


def _fit(tmp_path, path, steps):
    module = LokiLM("tiny", vocab_size=64)
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    trainer = L.Trainer(max_steps=steps, callbacks=[InitialCheckpoint(str(path))], logger=False,
                        enable_checkpointing=False, limit_val_batches=0, accelerator="cpu",
                        enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)
    trainer.fit(module, datamodule=SyntheticSteps(n_steps=steps, vocab=64))
    return before, module


def test_saves_the_untrained_weights_once(tmp_path):
    path = tmp_path / "ckpt" / "step-0.ckpt"
    before, trained = _fit(tmp_path, path, steps=2)
    model, _, _ = load_model(path)
    saved = model.state_dict()
    assert torch.load(path, weights_only=False)["global_step"] == 0
    assert all(torch.equal(saved[k], v) for k, v in before.items())
    assert any(not torch.equal(saved[k], v) for k, v in trained.model.state_dict().items())
    stamp = path.stat().st_mtime_ns
    _fit(tmp_path, path, steps=1)  # another run into the same path leaves the file alone
    assert path.stat().st_mtime_ns == stamp
