"""DistillSteps: distillation step batches from the candidate cache, as the DataModule plans them:
disjoint across ranks, sized by the batch-size warmup, reseeded by a rollback."""

from __future__ import annotations

import pickle

import torch

from loki.data.datamodule import LokiDataModule
from loki.data.schedules import BatchSizeWarmup
from loki.distill.steps import DistillSteps


def test_steps_are_disjoint_across_ranks_and_deterministic(cache):
    a = [DistillSteps(cache, prompts=3, accumulation=2, rank=r, world_size=2) for r in (0, 1)]
    idx = [s(i)["index"].flatten().tolist() for i in range(2) for s in a]
    assert len(set(sum(idx, []))) == 24  # 2 steps x 2 ranks x 6 prompts: one epoch, no repeats
    assert a[0](1)["index"].tolist() == DistillSteps(cache, 3, 2, 0, 2)(1)["index"].tolist()
    # DataLoader workers receive the builder pickled, without the opened cache
    clone = pickle.loads(pickle.dumps(a[1]))
    assert clone._cache is None and torch.equal(clone(1)["input_ids"], a[1](1)["input_ids"])


def _datamodule(shards_dir, spec, **kw) -> LokiDataModule:
    return LokiDataModule(sources={"web": [shards_dir]}, block_size=16, micro_batch_size=4,
                          val_fraction=0.0, tokenizer=spec, seed=7, **kw)


def _consume(dm: LokiDataModule, n: int) -> list[tuple[dict, dict]]:
    """(state before, batch) for ``n`` steps, consumed the way the Trainer does."""
    it, out = iter(dm.train_dataloader()), []
    for _ in range(n):
        before = dm.state
        out.append((before, dm.on_before_batch_transfer(next(it), 0)))
    return out


def test_distillation_step_size_follows_the_batch_warmup(student, shards, cache):
    _, spec = student
    warmup = BatchSizeWarmup(start=4, target=16, over_tokens=1500)
    dm = _datamodule(shards, spec, batch_size=warmup)
    steps = DistillSteps(cache, prompts=2, lm_micro_tokens=4 * 16)
    dm.attach_interleave("distill", 4, steps)
    sizes = []
    for before, batch in _consume(dm, 24):
        if batch["kind"] != "distill":
            continue
        A = warmup.accumulation(before["tokens"], 4, 1)
        A_d = max(1, round(A * 4 * 16 / (2 * 10)))
        assert batch["input_ids"].shape[:2] == (A_d, 2)  # more micro-batches, same micro-batch
        gt = int((batch["labels"][:, :, 0] != -100).sum())  # ground-truth tokens of the step
        assert batch["tokens"] == gt
        sizes.append(A_d)
    assert sizes[0] == 3 and sizes[-1] == 13 and sizes == sorted(sizes)


def test_rollback_reseed_reaches_the_distillation_order(student, shards, cache):
    _, spec = student

    def build() -> LokiDataModule:
        dm = _datamodule(shards, spec)
        dm.attach_interleave("distill", 4, DistillSteps(cache, prompts=2, accumulation=3))
        dm.setup("fit")
        return dm

    def prompts(batches) -> list[list[int]]:
        return [b["index"].flatten().tolist() for _, b in batches if b["kind"] == "distill"]

    dm = build()
    first = _consume(dm, 8)
    target = dm.state_dict()  # what a rollback restores
    straight = _consume(dm, 8)
    rolled = build()
    rolled.load_state_dict(target)
    rolled.reseed(12345)
    after = _consume(rolled, 8)
    assert prompts(after) != prompts(straight)  # the spike's prompts do not simply repeat
    epoch = sum(prompts(first) + prompts(after), [])
    assert sorted(epoch) == list(range(24))  # 4 steps x 6 prompts: one epoch, none repeated
    resumed = build()  # the reseed is in the state: a resume continues the reseeded order
    resumed.load_state_dict(rolled.state_dict())
    assert prompts(_consume(resumed, 8)) == prompts(_consume(rolled, 8))
