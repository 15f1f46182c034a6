"""CPU snapshots of training state: copies, never views of the live tensors, also for the tensor
subclasses a sharded 8-bit run holds (torchao's ``OptimState8bit``, FSDP2's ``DTensor``)."""

from __future__ import annotations

import pytest
import torch

from loki.snapshot import to_cpu


def test_nested_state_is_copied_not_aliased():
    live = {"step": 3, "params": [torch.ones(4), (torch.zeros(2), "tag")], "lr": {"value": 0.1}}
    snap = to_cpu(live)
    live["params"][0].add_(1)
    live["params"][1][0].fill_(5)
    live["lr"]["value"] = 0.2
    assert torch.equal(snap["params"][0], torch.ones(4))
    assert torch.equal(snap["params"][1][0], torch.zeros(2)) and snap["params"][1][1] == "tag"
    assert isinstance(snap["params"][1], tuple) and snap["lr"]["value"] == 0.1


def test_an_8bit_optimizer_state_is_copied_not_aliased():
    subclass_8bit = pytest.importorskip("torchao.optim.subclass_8bit")
    live = subclass_8bit.OptimState8bit.zeros((1024,), signed=True, block_size=256)
    live.copy_(torch.linspace(-1, 1, 1024))
    before = live.dequantize().clone()
    snap = to_cpu(live)
    assert type(snap) is type(live) and torch.equal(snap.dequantize(), before)
    live.copy_(torch.full((1024,), 0.5))  # the optimizer's next update, in place
    assert torch.equal(snap.dequantize(), before)


def test_a_sharded_tensor_is_copied_where_it_lives(tmp_path):
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Shard, distribute_tensor

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        live = distribute_tensor(torch.arange(8.0), init_device_mesh("cpu", (1,)), [Shard(0)])
        snap = to_cpu({"exp_avg": live})["exp_avg"]
        live.to_local().mul_(-1)
        assert isinstance(snap, DTensor) and snap.placements == live.placements
        assert torch.equal(snap.to_local(), torch.arange(8.0))
    finally:
        dist.destroy_process_group()
