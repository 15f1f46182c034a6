"""LokiDataModule: exact resume, reseed, rank split, warmup, mixture, interleave, validation."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from loki.data.datamodule import LokiDataModule
from loki.data.schedules import BatchSizeWarmup
from loki.errors import LokiError
from tests.data.fixtures import write_source

T, B = 16, 2


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    return {"web": write_source(root, "web", n_docs=60, seed=1),
            "synthetic": write_source(root, "synthetic", n_docs=30, seed=2)}


def make(shards, names=("web",), rank=0, world=1, **kw):
    kw.setdefault("batch_size", BatchSizeWarmup(start=B * world, target=4 * B * world,
                                                over_tokens=40 * B * T * world))
    dm = LokiDataModule(sources={n: [str(shards[n])] for n in names}, block_size=T,
                        micro_batch_size=B, val_fraction=kw.pop("val_fraction", 0), **kw)
    dm.distribute(rank, world)
    dm.setup("fit")
    return dm


def consume(dm, n, it=None):
    """Train on ``n`` step batches the way the Trainer does; returns them and the iterator."""
    it = iter(dm.train_dataloader()) if it is None else it
    out = []
    for _ in range(n):
        out.append(dm.on_before_batch_transfer(next(it), 0))
    return out, it


def digest(batches) -> str:
    h = hashlib.sha256()
    for b in batches:
        h.update(b["kind"].encode())
        if b["kind"] == "lm":
            h.update(b["index"].numpy().tobytes())
            h.update(b["input_ids"].numpy().tobytes())
    return h.hexdigest()


def test_step_batch_shapes_and_packing(shards):
    dm = make(shards)
    (b,), _ = consume(dm, 1)
    assert b["kind"] == "lm" and b["input_ids"].shape == (1, B, T) == b["labels"].shape
    assert b["input_ids"].dtype == torch.long and b["index"].shape == (1, B)
    assert torch.equal(b["input_ids"][..., 1:], b["labels"][..., :-1])  # shifted by one
    assert dm.vocab_size == 256 and dm.vocab_hash == "testhash00000000"
    assert dm.tokens_seen == B * T


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("stop", [5, 37])  # mid-warmup; later, after the epoch boundary
def test_resume_continues_exactly(shards, workers, stop):
    n = 60
    straight, _ = consume(make(shards, ("web", "synthetic")), n)
    dm = make(shards, ("web", "synthetic"), num_workers=workers)
    first, it = consume(dm, stop)
    next(it), next(it)  # prefetched by the loader but never trained on: must not count
    state = dm.state_dict()
    del it
    resumed = make(shards, ("web", "synthetic"), num_workers=workers)
    resumed.load_state_dict(state)
    rest, _ = consume(resumed, n - stop)
    assert digest(first + rest) == digest(straight)
    web = resumed.stream.sources[0]
    assert resumed.state["consumed"]["web"] > web.train_size  # crossed into epoch 2
    a = [b["input_ids"].shape[0] for b in straight]
    assert a[0] == 1 and a[-1] == 4 and 1 in a[:stop + 1]  # the stop lies inside the warmup


def test_state_loaded_before_setup_is_applied_at_setup(shards):
    dm = make(shards)
    consume(dm, 7)
    state = dm.state_dict()
    fresh = LokiDataModule(sources={"web": [str(shards["web"])]}, block_size=T,
                           micro_batch_size=B, val_fraction=0, batch_size=dm.warmup)
    fresh.load_state_dict(state)  # Lightning restores before the loaders exist
    fresh.setup("fit")
    assert fresh.state == dm.state
    changed = LokiDataModule(sources={"web": [str(shards["web"])]}, block_size=T + 1,
                             micro_batch_size=B, val_fraction=0)
    changed.setup("fit")
    with pytest.raises(LokiError, match="data layout"):
        changed.load_state_dict(state)


@pytest.mark.parametrize("workers", [0, 2])
def test_reseed_changes_the_future_not_the_past(shards, workers):
    dm = make(shards, batch_size=BatchSizeWarmup(target=4), num_workers=workers)
    n_epoch = dm.stream.sources[0].train_size // 4
    base, _ = consume(make(shards, batch_size=BatchSizeWarmup(target=4)), n_epoch)
    past, it = consume(dm, 10)
    pending = next(it)  # fetched ahead (as Lightning's fetcher does) before the reseed
    dm.reseed(99)
    future = [dm.on_before_batch_transfer(pending, 0)]  # stale: rebuilt from the new order
    future += consume(dm, n_epoch - 11, it)[0]
    plain = make(shards, batch_size=BatchSizeWarmup(target=4))  # no batch in flight
    consume(plain, 10)
    plain.reseed(99)
    assert digest(consume(plain, n_epoch - 10)[0]) == digest(future)
    assert digest(past) == digest(base[:10])
    ids = lambda bs: torch.cat([b["index"].flatten() for b in bs]).tolist()  # noqa: E731
    assert ids(future) != ids(base[10:])
    seen, ref = ids(past + future), ids(base)
    assert len(set(seen)) == len(seen)  # no repeats within the epoch
    # the same samples as the unreseeded epoch, up to the < 4 the epoch's last step leaves out
    assert len(set(seen) ^ set(ref)) <= 2 * (dm.stream.sources[0].train_size % 4)
    state = dm.state_dict()
    assert state["stream"]["reseeds"][0]["seed"] == 99
    again = make(shards, batch_size=BatchSizeWarmup(target=4))
    again.load_state_dict(state)
    assert digest(consume(again, 5)[0]) == digest(consume(dm, 5)[0])


def test_two_ranks_are_disjoint_and_cover_the_epoch(shards):
    ranks = [make(shards, rank=r, world=2, batch_size=BatchSizeWarmup(target=8)) for r in (0, 1)]
    size = ranks[0].stream.sources[0].train_size
    steps = size // 8
    seen = [torch.cat([b["index"].flatten() for b in consume(dm, steps)[0]]).tolist()
            for dm in ranks]
    assert not set(seen[0]) & set(seen[1])
    assert len(seen[0]) == len(seen[1]) == steps * 4
    everything = sorted(seen[0] + seen[1])
    assert len(set(everything)) == len(everything) == steps * 8 > size - 8


def test_warmup_sizes_and_token_counts(shards):
    warm = BatchSizeWarmup(points=f"0:2, {3 * 2 * T}:4, {10 * 2 * T}:8")
    dm = make(shards, batch_size=warm)
    batches, _ = consume(dm, 12)
    a = [b["input_ids"].shape[0] for b in batches]
    # tokens before each step: 0,32,64 -> 2 seqs; 96..: 4 seqs; from 320 on: 8 seqs
    assert a == [1, 1, 1, 2, 2, 2, 2, 4, 4, 4, 4, 4]
    assert dm.tokens_seen == sum(x * B * T for x in a)


def test_mixture_proportions_follow_the_schedule(shards):
    switch = 400 * B * T
    dm = make(shards, ("web", "synthetic"), batch_size=BatchSizeWarmup(target=8),
              mixture={"web": 1.0, "synthetic": f"0:0.25, {switch}:0"})
    batches, _ = consume(dm, 100)  # 800 samples, all before the switch
    src = torch.cat([b["source"].flatten() for b in batches]).numpy()
    share = (src == 1).mean()
    assert abs(share - 0.2) < 4 * np.sqrt(0.2 * 0.8 / len(src))
    later, _ = consume(dm, 60, None)
    assert dm.tokens_seen > switch
    assert all((b["source"] == 0).all() for b in later[-10:])


def test_interleaved_steps_keep_their_own_cursor_across_resume(shards):
    def make_step(index):
        return {"kind": "distill", "input_ids": torch.full((1, B, T), index),
                "labels": torch.full((1, B, T), index)}

    def build():
        dm = make(shards, batch_size=BatchSizeWarmup(target=2))
        dm.attach_interleave("distill", 4, make_step)
        return dm

    straight, _ = consume(build(), 16)
    assert [b["kind"] for b in straight[:4]] == ["lm", "lm", "lm", "distill"]
    assert [int(b["input_ids"][0, 0, 0]) for b in straight if b["kind"] == "distill"] == [0, 1,
                                                                                          2, 3]
    dm = build()
    first, _ = consume(dm, 6)
    resumed = build()
    resumed.load_state_dict(dm.state_dict())
    rest, _ = consume(resumed, 10)
    assert digest(first + rest) == digest(straight)
    assert [b["kind"] for b in rest[:2]] == ["lm", "distill"]  # the 8th step is distill
    assert resumed.tokens_seen == 12 * B * T  # distillation steps are not LM tokens


def test_validation_is_fixed_and_never_trained_on(shards):
    dm = make(shards, val_fraction=0.1, batch_size=BatchSizeWarmup(target=4))
    val = list(dm.val_dataloader())
    assert val and all(v["input_ids"].shape == (B, T) for v in val)
    assert all(torch.equal(a["input_ids"], b["input_ids"])
               for a, b in zip(val, dm.val_dataloader()))
    source = dm.stream.sources[0]
    held = {int(source.first_id[f] + i) for f, i in source.val_samples()}
    train = torch.cat([b["index"].flatten() for b in
                       consume(dm, source.train_size // 4)[0]]).tolist()
    assert not held & set(train) and len(held) + len(set(train)) >= source.num_samples - 4


def test_max_tokens_ends_the_stream(shards):
    dm = make(shards, batch_size=BatchSizeWarmup(target=2), max_tokens=5 * B * T)
    assert len(list(dm.train_dataloader())) == 5


def test_loki_test_scores_the_validation_sequences(shards, tmp_path):
    import lightning as L

    from loki.module import LokiLM

    dm = make(shards, val_fraction=0.1, batch_size=BatchSizeWarmup(target=2))
    module = LokiLM({"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": T},
                    vocab_size=dm.vocab_size)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    (tested,) = trainer.test(module, dm, verbose=False)
    (validated,) = trainer.validate(module, dm, verbose=False)
    assert tested["test/loss"] == pytest.approx(validated["val/loss"])
