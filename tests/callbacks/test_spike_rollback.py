"""LossSpikeRollback on real (tiny) training runs over a LokiDataModule token-shard corpus.

The spikes come from ``InjectLossSpike`` (noise on the LM head, or a NaN loss); the rollback
code has no path of its own for them. A probe callback runs after the rollback callback in the
same hook and compares what was restored with what it recorded itself at the target step.
"""

from __future__ import annotations

import csv
import json
import math
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from callbacks.fault_injection import InjectLossSpike
from callbacks.spike_rollback import LossSpikeRollback, derive_seed
from loki.data.datamodule import LokiDataModule
from loki.data.schedules import BatchSizeWarmup
from loki.data.shard_writer import ShardWriter
from loki.errors import LokiError
from loki.module import LokiLM
from tests.helpers.synthetic import SyntheticSteps

TOKENIZER = {"spec": "test", "vocab_size": 512, "vocab_hash": "test-512", "eot_id": 511}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Three shards of documents with a learnable pattern (next token = token + 1 mod 500)."""
    folder = tmp_path_factory.mktemp("corpus") / "web"
    writer = ShardWriter(folder, "web", TOKENIZER, shard_tokens=2000)
    rng = np.random.default_rng(0)
    for _ in range(60):
        writer.add_document((int(rng.integers(0, 500)) + np.arange(100)) % 500)
    writer.close()
    return folder


def _data(corpus: Path, warmup: bool = False) -> LokiDataModule:
    # with warmup: 1 micro-batch per step for the first 10 steps (320 tokens), then 2
    batch_size = BatchSizeWarmup(points="0:2, 320:4") if warmup else None
    return LokiDataModule(sources={"web": [str(corpus)]}, block_size=16, micro_batch_size=2,
                          batch_size=batch_size, seed=7, val_fraction=0.0)


def _module(optimizer=None) -> LokiLM:
    torch.manual_seed(0)
    return LokiLM("tiny", config_overrides={"n_layer": 1},
                  optimizer=optimizer or partial(torch.optim.AdamW, lr=1e-3))


def _trainer(root: Path, steps: int, callbacks: list, logger=False, **kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=logger,
                     enable_progress_bar=False, enable_model_summary=False,
                     enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
                     default_root_dir=root, limit_val_batches=0, callbacks=callbacks, **kwargs)


def _rollback(**kwargs) -> LossSpikeRollback:
    args = dict(warmup_steps=6, window=32, snapshot_every_n_steps=5, seed=11)
    return LossSpikeRollback(**{**args, **kwargs})


def _same(a, b) -> bool:
    """Exact equality of nested state (tensors bit for bit, dtype included)."""
    if torch.is_tensor(a):
        return torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _copy(obj):
    if torch.is_tensor(obj):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _copy(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_copy(v) for v in obj)
    return obj


class Probe(L.Callback):
    """Records every trained step (sample ids, full state); checks each rollback's result."""

    def __init__(self, rollback: LossSpikeRollback) -> None:
        self.rollback, self.count = rollback, 0
        self.trained: list[dict] = []  # {"step", "ids", "alive"}
        self.states: dict[int, dict] = {}
        self.checks: list[dict[str, bool]] = []

    def on_train_start(self, trainer, pl_module):
        self.count = self.rollback.count  # a resumed run starts with its restored count

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        opt = trainer.optimizers[0]
        if self.rollback.count == self.count:
            self.trained.append({"step": trainer.global_step, "alive": True,
                                 "ids": batch["index"].reshape(-1).tolist()})
            self.states[trainer.global_step] = {
                "params": _copy(pl_module.state_dict()), "optimizer": _copy(opt.state_dict()),
                "lr": [g["lr"] for g in opt.param_groups], "tokens": pl_module.tokens_seen,
                "data": _copy(trainer.datamodule.state_dict()["stream"])}
            return
        # rollback right now: the batch just trained and the steps after the target are gone
        self.count = self.rollback.count
        event = self.rollback.history[-1]
        self.trained.append({"step": event["spike_step"], "alive": True,
                             "ids": batch["index"].reshape(-1).tolist()})
        for t in self.trained:
            if t["step"] > event["target_step"] and t["alive"]:
                t["alive"], t["discarded_by"] = False, self.count
        ref = self.states[event["target_step"]]
        data = trainer.datamodule.state_dict()["stream"]
        self.checks.append({
            "global_step": trainer.global_step == event["target_step"],
            "params": _same(pl_module.state_dict(), ref["params"]),
            "optimizer": _same(opt.state_dict(), ref["optimizer"]),
            "lr": [g["lr"] for g in opt.param_groups] == ref["lr"],
            "tokens": pl_module.tokens_seen == ref["tokens"],
            "data_position": (data["step"], data["tokens"]) == (ref["data"]["step"],
                                                                ref["data"]["tokens"]),
            "reseeded": data["seed"] == event["seed"] != ref["data"]["seed"],
        })

    def surviving_ids(self) -> list[int]:
        return [i for t in self.trained if t["alive"] for i in t["ids"]]


def _stream_ids(corpus: Path, steps: int) -> list[list[int]]:
    """The data order without any rollback: the ids of steps 1..steps."""
    dm = _data(corpus, warmup=True)
    dm.setup("fit")
    it = iter(dm.train_dataloader())
    return [dm.on_before_batch_transfer(next(it), 0)["index"].reshape(-1).tolist()
            for _ in range(steps)]


# --------------------------------------------------------------------------- seeds, set-up
def test_derive_seed():
    assert derive_seed(3, 1) == derive_seed(3, 1) != derive_seed(3, 2)


def test_setup_fails_without_reseed(tmp_path):
    with pytest.raises(LokiError, match="reseed"):
        _trainer(tmp_path, 2, [_rollback()]).fit(_module(), SyntheticSteps(n_steps=2))


# --------------------------------------------------------------------------- one spike
@pytest.fixture(scope="module")
def spiked_run(corpus, tmp_path_factory):
    """24 steps with an 8-bit AdamW and batch-size warmup (2 micro-batches from step 11 on);
    noise on the LM head before step 13; a checkpoint at step 20."""
    bnb = pytest.importorskip("bitsandbytes")
    root = tmp_path_factory.mktemp("spiked")
    rollback = _rollback()
    probe = Probe(rollback)
    ckpt = ModelCheckpoint(dirpath=root / "ckpt", filename="{step}", every_n_train_steps=20,
                           save_top_k=-1)
    module = _module(partial(bnb.optim.AdamW8bit, lr=1e-3))
    trainer = _trainer(root, 24, [InjectLossSpike(at_steps=[13], factor=20.0), rollback, probe,
                                  ckpt], logger=CSVLogger(root, name="csv", version=""))
    trainer.fit(module, data := _data(corpus, warmup=True))
    return {"rollback": rollback, "probe": probe, "trainer": trainer, "data": data,
            "root": root, "module": module}


def test_injected_spike_rolls_back_once_to_an_identical_state(spiked_run):
    rollback, probe = spiked_run["rollback"], spiked_run["probe"]
    assert rollback.count == 1 and len(rollback.history) == 1
    event = rollback.history[0]
    assert event["spike_step"] == 13 and event["target_step"] == 10, event
    assert event["target"] == "memory" and event["loss"] > 8  # ln(512) = 6.2 at the start
    assert event["log_step"] == 12  # step s logs at s - 1
    assert probe.checks == [dict.fromkeys(probe.checks[0], True)], probe.checks
    # optimizer state really is 8-bit (so the check above covered the quantized state)
    state = spiked_run["trainer"].optimizers[0].state_dict()["state"]
    assert any(v.dtype == torch.uint8 for s in state.values() for v in _tensors(s))
    assert spiked_run["trainer"].global_step == 24  # the run completed its surviving steps
    events = (Path(rollback.dirpath) / "rollback-events.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in events] == rollback.history
    # the event reaches the logger at its own step, not only on log_every_n_steps steps
    table = (spiked_run["root"] / "csv" / "metrics.csv").read_text().splitlines()
    rows = list(csv.DictReader(table))
    hits = [r for r in rows if r["rollback/spike_step"]]
    assert [(r["step"], float(r["rollback/spike_step"])) for r in hits] == [("12", 13.0)]


def _tensors(obj):
    if torch.is_tensor(obj):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)


def test_rollback_reseeds_and_skips_the_spike_window(spiked_run, corpus):
    rollback, probe = spiked_run["rollback"], spiked_run["probe"]
    event = rollback.history[0]
    discarded = sorted(i for t in probe.trained if not t["alive"] for i in t["ids"])
    assert event["skipped_samples"] == discarded and len(discarded) == 3 * 4  # steps 11-13
    surviving = probe.surviving_ids()
    # nothing consumed twice; steps 11-24 still take 2 micro-batches (warmup position restored)
    assert len(surviving) == len(set(surviving)) == 10 * 2 + 14 * 4
    after = [i for t in probe.trained[13:] for i in t["ids"]]  # trained after the rollback
    assert not set(after) & set(discarded)  # the spike window is never served again
    # The reseed changed the order: the same stream positions (steps 14..) without the reseed
    # would have served other samples.
    original = _stream_ids(corpus, 24)
    assert after[:12] != [i for step in original[13:] for i in step][:12]
    assert [t["ids"] for t in probe.trained[:10]] == original[:10]  # before: the plain order


def test_resumed_run_keeps_count_and_reseeded_order(spiked_run, corpus, tmp_path):
    path = spiked_run["root"] / "ckpt" / "step=20.ckpt"
    assert path.is_file()
    rollback = _rollback()
    probe = Probe(rollback)
    trainer = _trainer(tmp_path, 24, [InjectLossSpike(at_steps=[13], factor=20.0), rollback,
                                      probe])
    bnb = pytest.importorskip("bitsandbytes")
    trainer.fit(_module(partial(bnb.optim.AdamW8bit, lr=1e-3)), _data(corpus, warmup=True),
                ckpt_path=path)
    assert rollback.count == 1 and rollback.history == spiked_run["rollback"].history
    resumed = [t["ids"] for t in probe.trained]
    assert resumed == [t["ids"] for t in spiked_run["probe"].trained[-4:]]  # steps 21-24
    reseeds = trainer.datamodule.state_dict()["stream"]["reseeds"]
    assert [r["seed"] for r in reseeds] == [rollback.history[0]["seed"]]


# --------------------------------------------------------------------------- no spike
def test_a_normal_tiny_run_has_no_false_positive(corpus, tmp_path):
    rollback = LossSpikeRollback(warmup_steps=10, snapshot_every_n_steps=10)  # default rules
    trainer = _trainer(tmp_path, 60, [rollback])
    trainer.fit(module := _module(), _data(corpus))
    assert trainer.global_step == 60 and rollback.count == 0
    assert rollback.detector.seen == 60  # every step was judged, 50 of them after warm-up
    assert module.last_train_loss < 5.5  # it learned (ln 512 = 6.2)


def test_lagged_reading_still_catches_a_two_step_spike(corpus, tmp_path):
    # read_lag=1 is what a GPU run does (the loss is read a step later, without a sync): a
    # spike that must persist two steps (13 and 14) is acted on at step 15, back to step 10.
    rollback = _rollback(persistence=2, read_lag=1)
    probe = Probe(rollback)
    _trainer(tmp_path, 17, [InjectLossSpike(at_steps=[13], factor=20.0), rollback, probe]).fit(
        _module(), _data(corpus))
    assert rollback.count == 1
    event = rollback.history[0]
    assert (event["spike_step"], event["target_step"]) == (15, 10), event
    assert "loss of step 14, read at step 15" in event["reason"]
    assert probe.checks == [dict.fromkeys(probe.checks[0], True)], probe.checks
    assert len(event["skipped_samples"]) == 5 * 2  # steps 11-15, one micro-batch of 2 each


# --------------------------------------------------------------------------- limits
def test_repeated_spikes_beyond_the_limit_stop_with_a_clear_error(corpus, tmp_path):
    # A NaN loss at step 9, every time step 9 comes round: roll back once, then give up.
    rollback = _rollback(max_rollbacks=1, rollback_window_tokens="1M")
    inject = InjectLossSpike(at_steps=[9], factor=math.nan, mode="loss", repeat=True)
    with pytest.raises(LokiError) as err:
        _trainer(tmp_path, 20, [inject, rollback]).fit(_module(), _data(corpus))
    message = str(err.value)
    assert "loss spike at step 9" in message and "non-finite" in message
    assert "1 rollbacks within the last 1000000 tokens (max_rollbacks=1)" in message
    assert f"step 9 -> 5 seed {rollback.history[0]['seed']}" in message
    assert rollback.count == 1 and "\n" not in message


# --------------------------------------------------------------------------- on disk
class DamageLatest(L.Callback):
    """At ``step``: truncate the newest good rollback checkpoint and leave a killed writer's
    half-written ``.tmp`` next to it."""

    def __init__(self, rollback: LossSpikeRollback, step: int) -> None:
        self.rollback, self.step, self.damaged = rollback, step, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step and self.damaged is None:
            path = Path(self.rollback.good_checkpoints[-1]["path"])
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])
            (path.parent / "rollback-step=00000016-r0.ckpt.tmp").write_bytes(data[:100])
            self.damaged = path


def test_truncated_checkpoint_is_never_a_rollback_target(corpus, tmp_path):
    rollback = _rollback(snapshot_every_n_steps=None, checkpoint_every_n_steps=5)
    probe = Probe(rollback)
    damage = DamageLatest(rollback, 16)
    callbacks = [InjectLossSpike(at_steps=[17], factor=20.0), rollback, damage, probe]
    _trainer(tmp_path, 19, callbacks).fit(_module(), _data(corpus))
    assert damage.damaged.name == "rollback-step=00000015-r0.ckpt"
    event = rollback.history[0]
    assert event["target_step"] == 10 and event["target"].endswith("step=00000010-r0.ckpt")
    assert probe.checks == [dict.fromkeys(probe.checks[0], True)], probe.checks
    assert [c["step"] for c in rollback.good_checkpoints] == [10, 15]  # 15 written anew


# --------------------------------------------------------------------------- DDP
class RankReport(L.Callback):
    def __init__(self, rollback: LossSpikeRollback, folder: Path) -> None:
        self.rollback, self.folder = rollback, folder

    def on_train_end(self, trainer, pl_module):
        checksum = sum(float(p.double().sum()) for p in pl_module.parameters())
        report = {"count": self.rollback.count, "history": self.rollback.history,
                  "global_step": trainer.global_step, "checksum": checksum}
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))


@pytest.mark.slow
def test_two_process_ddp_rolls_back_on_both_ranks(corpus, tmp_path):
    rollback = _rollback(checkpoint_every_n_steps=5)
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp_spawn", max_steps=14, logger=False,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        default_root_dir=tmp_path, limit_val_batches=0,
        callbacks=[InjectLossSpike(at_steps=[12], factor=20.0), rollback,
                   RankReport(rollback, tmp_path)])
    trainer.fit(_module(), _data(corpus))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for report in ranks:
        assert report["count"] == 1 and report["global_step"] == 14
        assert report["history"][0]["target_step"] == 10
    assert ranks[0]["history"] == ranks[1]["history"]  # incl. the samples of both ranks
    assert len(ranks[0]["history"][0]["skipped_samples"]) == 2 * 2 * 2  # 2 steps x 2 ranks
    assert ranks[0]["checksum"] == ranks[1]["checksum"]


# --------------------------------------------------------------------------- replayed steps
class ValSteps(L.Callback):
    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.steps.append(trainer.global_step)


def test_replayed_steps_checkpoint_and_validate_again(corpus, tmp_path):
    """Spike at step 13, target 10: the step-12 checkpoint of the discarded steps is renamed,
    the replayed step 12 is saved under its own name (not "-v1" beside it) and validated again."""
    rollback, val = _rollback(), ValSteps()
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{step}", every_n_train_steps=4,
                           save_top_k=-1)
    data = LokiDataModule(sources={"web": [str(corpus)]}, block_size=16, micro_batch_size=2,
                          seed=7, val_fraction=0.1, val_samples=4)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=16, logger=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path, limit_val_batches=1, val_check_interval=4,
                        check_val_every_n_epoch=None, num_sanity_val_steps=0,
                        callbacks=[InjectLossSpike(at_steps=[13], factor=float("nan"),
                                                   mode="loss"), rollback, val, ckpt])
    trainer.fit(_module(), data)
    assert [(e["spike_step"], e["target_step"]) for e in rollback.history] == [(13, 10)]
    assert val.steps == [4, 8, 12, 12, 16]  # step 12 validated on both branches
    names = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert names == ["step=12.ckpt", "step=12.ckpt.discarded-r1", "step=16.ckpt", "step=4.ckpt",
                     "step=8.ckpt"]
    replayed = torch.load(tmp_path / "ckpt" / "step=12.ckpt", weights_only=False)
    discarded = torch.load(tmp_path / "ckpt" / "step=12.ckpt.discarded-r1", weights_only=False)
    assert replayed["callbacks"][rollback.state_key]["count"] == 1  # saved after the rollback
    assert discarded["callbacks"][rollback.state_key]["count"] == 0


# --------------------------------------------------------------------------- logged steps
def _logged_rows(corpus: Path, root: Path, spike: bool) -> tuple[list[tuple[int, str]], list]:
    """16 steps logged every step, validated every 5 (validation set of 4 samples): the
    (step, kind) of every metrics.csv row, and the rollbacks."""
    rollback = _rollback()
    data = LokiDataModule(sources={"web": [str(corpus)]}, block_size=16, micro_batch_size=2,
                          seed=7, val_fraction=0.1, val_samples=4)
    inject = [InjectLossSpike(at_steps=[13], factor=float("nan"), mode="loss")] if spike else []
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=16, log_every_n_steps=1,
                        logger=CSVLogger(root, name="csv", version=""),
                        enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, default_root_dir=root,
                        limit_val_batches=1, val_check_interval=5, check_val_every_n_epoch=None,
                        num_sanity_val_steps=0, callbacks=[*inject, rollback])
    trainer.fit(_module(), data)
    with open(root / "csv" / "metrics.csv", newline="") as f:
        rows = [(int(r["step"]), "rollback" if r.get("rollback/spike_step") else
                 "val" if r["val/loss"] else "train" if r["train/loss"] else "other")
                for r in csv.DictReader(f)]
    return rows, rollback.history


def test_rows_after_a_rollback_are_logged_at_the_steps_of_an_uninterrupted_run(corpus, tmp_path):
    """A step s logs at s - 1, its validation too. The rollback (spike at step 13, back to step
    10, a validation step) logs the discarded steps at their steps, then validation of step 10
    again and the replayed steps 11..16 where a run without a spike logs them: the last
    validation row at the last training row's step, not 3 steps later."""
    plain, none = _logged_rows(corpus, tmp_path / "plain", spike=False)
    rows, history = _logged_rows(corpus, tmp_path / "spiked", spike=True)
    assert none == [] and [(e["spike_step"], e["target_step"]) for e in history] == [(13, 10)]
    assert plain == [(s, "train") for s in range(4)] + [(4, "train"), (4, "val")] + [
        (s, "train") for s in range(5, 9)] + [(9, "train"), (9, "val")] + [
        (s, "train") for s in range(10, 14)] + [(14, "train"), (14, "val"), (15, "train")]
    assert history[0]["log_step"] == 12
    discarded = [r for r in plain if r[0] <= 11] + [(12, "rollback"), (12, "train")]  # 11..13
    assert rows == discarded + [(9, "val")] + [r for r in plain if r[0] >= 10]
