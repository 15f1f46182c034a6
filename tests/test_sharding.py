"""FSDP2 through ModelParallelStrategy on the CPU (gloo), 8-bit AdamW state in distributed
checkpoints, resume, consolidation, and the single-process options (checkpointing, compile).

The 2-process test runs this file as a script under ``torchrun`` (the way a cluster launches
``loki fit``): ``python -m torch.distributed.run --nproc_per_node 2 tests/test_sharding.py OUT``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))

from loki.consolidate import consolidate, main  # noqa: E402
from loki.errors import LokiError  # noqa: E402
from loki.module import LokiLM, load_model  # noqa: E402
from loki.precision import adamw_8bit  # noqa: E402
from loki.schedule import TokenCosineSchedule  # noqa: E402
from loki.sharding import ShardingConfig, shard_model  # noqa: E402

RANKS, STEPS, RESUME_AT, ACCUM, MICRO, SEQ = 2, 6, 3, 2, 2, 16
# fp32 compute so that the comparison with one process measures sharding, not bf16 rounding
FP32 = ShardingConfig(param_dtype=None, reduce_dtype=None)


def step_batch(step: int, rank: int) -> dict[str, torch.Tensor]:
    """The (ACCUM, MICRO, SEQ) step batch that ``rank`` trains on at ``step``."""
    g = torch.Generator().manual_seed(10_000 * step + rank)
    start = torch.randint(0, 512, (ACCUM, MICRO, 1), generator=g)
    seq = (start + torch.arange(SEQ + 1)) % 512
    return {"kind": "lm", "input_ids": seq[..., :-1], "labels": seq[..., 1:]}


class StepData(L.LightningDataModule):
    """Yields the steps from the trainer's global step on, read when iteration starts, so a
    resumed run continues the data (and epochs do not matter). ``merged``: one process gets
    every rank's micro-batches, i.e. the same global batch as RANKS processes."""

    def __init__(self, merged: bool = False) -> None:
        super().__init__()
        self.merged = merged

    def _steps(self):
        trainer = self.trainer
        for s in range(trainer.global_step, STEPS):
            if self.merged:
                parts = [step_batch(s, r) for r in range(RANKS)]
                yield {"kind": "lm", **{k: torch.cat([p[k] for p in parts])
                                        for k in ("input_ids", "labels")}}
            else:
                yield step_batch(s, trainer.global_rank)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_Iterable(self._steps), batch_size=None)


class _Iterable(IterableDataset):
    def __init__(self, make) -> None:
        self.make = make

    def __iter__(self):
        return self.make()


class RecordLoss(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self.losses.append(pl_module.last_train_loss)


def optimizer():
    # torchao in both runs (auto would pick bitsandbytes for the unsharded one)
    return partial(adamw_8bit, lr=3e-3, weight_decay=0.1, backend="torchao")


def _fit(strategy, devices: int, max_steps: int, out: Path, merged: bool, ckpt=None, **kw):
    torch.manual_seed(0)
    # warmup + cosine decay: a resume that lost the peak LR would decay it twice
    schedule = TokenCosineSchedule(warmup_tokens=256, decay_tokens=768, min_lr_ratio=0.1)
    module = LokiLM("tiny", optimizer=optimizer(), lr_schedule=schedule,
                    sharding=kw.pop("sharding", FP32))
    record = RecordLoss()
    trainer = L.Trainer(
        accelerator="cpu", devices=devices, strategy=strategy, max_steps=max_steps,
        logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, default_root_dir=out, callbacks=[record], **kw,
    )
    trainer.fit(module, StepData(merged), ckpt_path=ckpt)
    return trainer, module, record.losses


def worker(out: Path) -> None:
    """Both FSDP2 phases in one launch: fit RESUME_AT steps and save a distributed checkpoint,
    then a fresh module and trainer resume from it to STEPS."""
    from lightning.pytorch.strategies import ModelParallelStrategy
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    def strategy():
        return ModelParallelStrategy(data_parallel_size=RANKS, tensor_parallel_size=1)

    trainer, module, first = _fit(strategy(), RANKS, RESUME_AT, out, False)
    trainer.save_checkpoint(out / "step3")
    optim = type(trainer.optimizers[0]).__module__
    trainer, module, second = _fit(strategy(), RANKS, STEPS, out, False, ckpt=out / "step3")
    trainer.save_checkpoint(out / "step6")
    full = get_model_state_dict(
        module.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    if trainer.global_rank == 0:
        torch.save(full, out / "full.pt")
        sharded = type(module.model.blocks[0].attn.qkv.weight).__name__
        (out / "result.json").write_text(json.dumps(
            {"losses": first + second, "optimizer": optim, "param_type": sharded,
             "tokens_seen": module.tokens_seen}
        ))


@pytest.mark.slow
def test_fsdp2_8bit_fit_resume_matches_one_process_and_consolidates(tmp_path):
    env = {**os.environ, "TORCHDYNAMO_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(RANKS),
           "--master_port", "29517", str(Path(__file__)), str(tmp_path)]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-4000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["param_type"] == "DTensor"  # really sharded
    assert result["optimizer"].startswith("torchao")  # adamw_8bit picked the FSDP2-safe state
    assert result["tokens_seen"] == STEPS * RANKS * ACCUM * MICRO * SEQ

    # One process, the same global batch (both ranks' micro-batches accumulated), same 8-bit
    # AdamW. Tolerance 2e-4 relative (measured: ~1e-5): quantization blocks (256 values) fall on
    # the same boundaries in both runs, so what remains is the float summation order of the
    # reduction. A resume that lost the peak LR is off by ~2e-3 at the last step.
    with torch.compiler.set_stance("force_eager"):  # as TORCHDYNAMO_DISABLE in the workers
        _, single, ref = _fit("auto", 1, STEPS, tmp_path / "single", True)
    assert result["losses"] == pytest.approx(ref, rel=2e-4)
    assert ref[-1] < ref[0]

    # Consolidation: the distributed checkpoint becomes one file with the gathered weights.
    assert sorted(p.suffix for p in (tmp_path / "step6").iterdir() if p.suffix == ".distcp")
    main([str(tmp_path / "step6"), "--output", str(tmp_path / "last.ckpt")])
    model, config, _ = load_model(tmp_path / "last.ckpt")
    full = torch.load(tmp_path / "full.pt")
    assert set(model.state_dict()) == set(full)
    reference = single.model.state_dict()
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, full[name], rtol=0, atol=0, msg=name)
        close = torch.isclose(value, reference[name], rtol=2e-2, atol=2e-3)
        # Embedding rows of tokens seen once or never have tiny second moments; there 8-bit
        # state turns summation-order noise into visible steps (a few of 32k values).
        assert close.float().mean() > 0.999 if name == "wte.weight" else close.all(), name
    restored = LokiLM.load_from_checkpoint(tmp_path / "last.ckpt")
    assert restored.config == config and restored.tokens_seen == result["tokens_seen"]


def test_consolidate_refuses_a_file_that_is_not_a_distributed_checkpoint(tmp_path):
    with pytest.raises(LokiError, match="neither a distributed checkpoint .* nor a run folder"):
        consolidate(tmp_path, tmp_path / "x.ckpt")


def test_checkpointing_and_compile_keep_names_and_gradients():
    from loki.config import LokiConfig
    from loki.model import Loki

    config = LokiConfig.from_name("tiny")
    torch.manual_seed(0)
    plain, wrapped = Loki(config), Loki(config)
    wrapped.load_state_dict(plain.state_dict())
    shard_model(wrapped, None, activation_checkpointing=True, compile=False)
    assert set(wrapped.state_dict()) == set(plain.state_dict())
    idx = torch.randint(0, 512, (2, 16))
    for m in (plain, wrapped):
        m.train()
        m(idx, idx)[1].backward()
    for (name, p), q in zip(plain.named_parameters(), wrapped.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_fsdp2_keeps_blocks_gathered_between_micro_batches(tmp_path):
    # One process, a gloo group of one: FSDP2's state is the same as on a GPU node. Parameters
    # are plain tensors while gathered and DTensors once resharded.
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor

    from loki.config import LokiConfig
    from loki.model import Loki
    from loki.sharding import gradient_sync

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        model = shard_model(Loki(LokiConfig.from_name("tiny")), init_device_mesh("cpu", (1,)))
        idx = torch.randint(0, 512, (2, 16))
        weight = lambda: model.blocks[0].attn.qkv.weight  # noqa: E731 (re-read: FSDP swaps it)
        with gradient_sync(None, model, enabled=False):  # not the last micro-batch
            model(idx, idx, return_logits=False)[1].backward()
        assert not isinstance(weight(), DTensor)  # still gathered for the next micro-batch
        with gradient_sync(None, model, enabled=True):  # the last one frees them
            model(idx, idx, return_logits=False)[1].backward()
        assert isinstance(weight(), DTensor) and weight().grad is not None
    finally:
        dist.destroy_process_group()


def test_sharding_config_rejects_unknown_dtype():
    with pytest.raises(LokiError, match="param_dtype"):
        ShardingConfig(param_dtype="fp12")
    with pytest.raises(LokiError, match="compile_scope"):
        ShardingConfig(compile_scope="layers")
    with pytest.raises(LokiError, match="float8_recipe"):
        ShardingConfig(float8_recipe="blockwise")
    with pytest.raises(LokiError, match="compile_mode must be one of default, max-autotune-no"):
        ShardingConfig(compile_mode="reduce-overhead")  # CUDA graphs: not under FSDP2


@pytest.mark.parametrize("scope", ["blocks", "model"])
def test_compile_mode_reaches_torch_compile(monkeypatch, scope):
    from loki.config import LokiConfig
    from loki.model import Loki
    from loki.sharding import configure_loki

    calls = []
    monkeypatch.setattr(torch.nn.Module, "compile",
                        lambda self, **kwargs: calls.append((type(self).__name__, kwargs)))
    for mode in ("default", "max-autotune-no-cudagraphs"):
        calls.clear()
        configure_loki(Loki(LokiConfig.from_name("tiny")),
                       ShardingConfig(compile=True, compile_scope=scope, compile_mode=mode), None)
        expected = {"backend": "inductor", **({"mode": mode} if mode != "default" else {})}
        names = {"blocks": ["Block", "Block"], "model": ["Loki"]}[scope]
        assert calls == [(name, expected) for name in names]


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
