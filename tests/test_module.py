from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from loki.errors import LokiError
from loki.module import LokiLM, load_model
from loki.schedule import TokenCosineSchedule
from tests.helpers.synthetic import SyntheticSteps


def _trainer(tmp_path: Path, steps: int, **kwargs) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu", devices=1, max_steps=steps, logger=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
        enable_checkpointing=False, **kwargs,
    )


def test_tokens_seen_and_lr_follow_the_token_schedule(tmp_path):
    accum = [1, 2, 3, 3, 3]
    data = SyntheticSteps(n_steps=5, accum=accum, micro=4, seq=16)
    schedule = TokenCosineSchedule(warmup_tokens=256, decay_tokens=2000, min_lr_ratio=0.1)
    module = LokiLM("tiny", lr_schedule=schedule)
    lrs = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    _trainer(tmp_path, 5, callbacks=[Record()]).fit(module, data)
    tokens = [sum(accum[: i + 1]) * 4 * 16 for i in range(5)]
    assert module.tokens_seen == tokens[-1]
    assert lrs == pytest.approx([3e-4 * schedule.factor(t) for t in tokens])


def test_training_logs_only_tensors_that_need_no_host_to_gpu_copy(tmp_path, monkeypatch):
    # LightningModule.log turns a plain number into a tensor on the module's device: on CUDA a
    # blocking copy every step. The step's metrics are device tensors or host_scalar CPU tensors.
    # (tests/test_hot_loop_gpu.py counts the syncs themselves on a GPU.)
    import numpy as np

    from callbacks.spike_rollback import LossSpikeRollback
    from loki.data.datamodule import LokiDataModule
    from loki.data.shard_writer import ShardWriter

    tokenizer = {"spec": "test", "vocab_size": 512, "vocab_hash": "test-512", "eot_id": 511}
    writer = ShardWriter(tmp_path / "web", "web", tokenizer, shard_tokens=1 << 12)
    for doc in np.random.default_rng(0).integers(0, 511, size=(40, 100)):
        writer.add_document(doc)
    writer.close()
    data = LokiDataModule(sources={"web": [str(tmp_path / "web")]}, block_size=16,
                          micro_batch_size=4, val_fraction=0.0, seed=0)
    logged = {}
    original = L.LightningModule.log

    prog_bar = set()

    def record(self, name, value, *args, **kwargs):
        logged[name] = value
        if kwargs.get("prog_bar") and self.trainer.training:
            prog_bar.add(name)
        return original(self, name, value, *args, **kwargs)

    monkeypatch.setattr(L.LightningModule, "log", record)
    module = LokiLM("tiny", optimizer=partial(torch.optim.AdamW, lr=3e-4))
    _trainer(tmp_path, 3, callbacks=[LossSpikeRollback(warmup_steps=1)]).fit(module, data)
    assert {"train/loss", "train/lr", "trainer/tokens_seen", "rollback/count"} <= set(logged)
    plain = {k: type(v).__name__ for k, v in logged.items() if not torch.is_tensor(v)}
    assert not plain, plain
    assert float(logged["train/lr"]) == pytest.approx(module.optimizers().param_groups[0]["lr"])
    # Lightning turns progress-bar values into numbers after every batch: only the loss copied
    # to the host without waiting (HostCopy) goes there; on the CPU it is the step's own loss
    assert prog_bar == {"loss"}
    assert float(logged["loss"]) == float(logged["train/loss"])


def test_training_reduces_loss_and_validates(tmp_path):
    data = SyntheticSteps(n_steps=60, micro=8, seq=16)
    module = LokiLM("tiny", optimizer=partial(torch.optim.AdamW, lr=3e-3))
    trainer = _trainer(tmp_path, 60, limit_val_batches=2, val_check_interval=30)
    trainer.fit(module, data)
    metrics = trainer.callback_metrics
    assert metrics["val/loss"] < 4.0  # from ~6.2 (ln 512) on a learnable pattern
    assert module.last_train_loss is not None and module.last_train_loss < 5.0
    assert torch.isfinite(metrics["val/ppl"])


def test_accumulation_equals_one_big_batch(tmp_path):
    # Two micro-batches of 4 accumulate to the same gradient as one micro-batch of 8. Plain
    # SGD (lr 1) makes the update the gradient itself; AdamW's first step is sign(g), which
    # turns float noise on near-zero gradients into full-size differences.
    torch.manual_seed(0)
    sgd = partial(torch.optim.SGD, lr=1.0)
    a = LokiLM("tiny", grad_clip=None, optimizer=sgd)
    b = LokiLM("tiny", grad_clip=None, optimizer=sgd)
    b.load_state_dict(a.state_dict())
    g = torch.Generator().manual_seed(1)
    seq = torch.randint(0, 512, (8, 17), generator=g)
    split = {"input_ids": seq[:, :-1].view(2, 4, 16), "labels": seq[:, 1:].view(2, 4, 16)}
    whole = {"input_ids": seq[None, :, :-1], "labels": seq[None, :, 1:]}
    for module, batch in ((a, split), (b, whole)):
        data = SyntheticSteps()
        data.train_dataloader = lambda batch=batch: DataLoader([batch], batch_size=None)
        _trainer(tmp_path, 1).fit(module, data)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5, msg=name)


def test_registered_objective_routes_other_kinds(tmp_path):
    seen = []

    def double_ce(pl_module, micro):
        seen.append(micro["input_ids"].shape)
        loss = pl_module.loss_on(micro, objective="lm") * 2
        return loss, {"doubled": float(loss)}

    module = LokiLM("tiny")
    module.register_objective("toy", double_ce)
    seq = torch.randint(0, 512, (3, 2, 9))
    batch = {"kind": "toy", "input_ids": seq[..., :-1], "labels": seq[..., 1:]}
    data = SyntheticSteps()
    data.train_dataloader = lambda: DataLoader([batch], batch_size=None)
    _trainer(tmp_path, 1).fit(module, data)
    assert seen == [torch.Size([2, 8])] * 3
    assert module.last_train_loss is None  # only plain LM steps set it


def test_unregistered_kind_is_a_clear_error(tmp_path):
    from loki.errors import LokiError

    module = LokiLM("tiny")
    data = SyntheticSteps()
    seq = torch.randint(0, 512, (1, 2, 9))
    batch = {"kind": "distill", "input_ids": seq[..., :-1], "labels": seq[..., 1:]}
    data.train_dataloader = lambda: DataLoader([batch], batch_size=None)
    with pytest.raises(LokiError, match="no objective is registered"):
        _trainer(tmp_path, 1).fit(module, data)


def test_model_code_runs_after_the_vector_math_warm_up(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr("loki.module.warm_up_vector_math", lambda: calls.append("warm"))
    LokiLM("tiny")
    with pytest.raises(LokiError, match="checkpoint not found"):
        load_model(tmp_path / "missing.ckpt")
    assert calls == ["warm", "warm"]


def test_weight_decay_groups():
    module = LokiLM("tiny")
    decay, no_decay = module.parameter_groups()
    names = {id(p): n for n, p in module.model.named_parameters()}
    assert all(p.ndim == 2 for p in decay["params"])
    assert {names[id(p)] for p in no_decay["params"]} >= {"wte.weight", "norm.weight"}
    assert no_decay["weight_decay"] == 0.0


def test_checkpoint_round_trip_and_load_model(tmp_path):
    data = SyntheticSteps(n_steps=3)
    module = LokiLM("tiny", config_overrides={"n_layer": 1})
    trainer = _trainer(tmp_path, 3)
    trainer.fit(module, data)
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    model, config, hparams = load_model(path)
    assert config.n_layer == 1 and hparams["config_overrides"] == {"n_layer": 1}
    idx = torch.randint(0, 512, (1, 8))
    torch.testing.assert_close(model(idx)[0], module.model.eval()(idx)[0])
    restored = LokiLM.load_from_checkpoint(path)
    assert restored.config == module.config
    ckpt = torch.load(path, weights_only=False)
    assert ckpt["loki"]["tokens_seen"] == module.tokens_seen == 3 * 4 * 16


@pytest.mark.slow
def test_two_process_ddp_fit_on_cpu(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    data = SyntheticSteps(n_steps=4, accum=[1, 2], micro=2, seq=16)
    module = LokiLM("tiny")
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp_spawn", max_steps=4, logger=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
        callbacks=[ModelCheckpoint(dirpath=tmp_path, filename="ddp", save_last=False)],
    )
    trainer.fit(module, data)
    ckpt = torch.load(tmp_path / "ddp.ckpt", weights_only=False)
    # tokens are counted globally: 2 ranks x (1 + 2 + 2 + 2) micro-batches x 2 x 16 tokens
    assert ckpt["loki"]["tokens_seen"] == 2 * 7 * 2 * 16
    assert ckpt["global_step"] == 4
