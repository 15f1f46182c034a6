"""Samples of a loss spike's steps stay skipped in later epochs (and across resume)."""

from __future__ import annotations

from collections import Counter

from loki.data.datamodule import LokiDataModule
from loki.data.schedules import BatchSizeWarmup
from tests.data.fixtures import write_source

T, B = 16, 2


def _dm(folder) -> LokiDataModule:
    dm = LokiDataModule(sources={"web": [str(folder)]}, block_size=T, micro_batch_size=B,
                        val_fraction=0, batch_size=BatchSizeWarmup(target=B), seed=3)
    dm.setup("fit")
    return dm


def _ids(dm: LokiDataModule, steps: int, it=None) -> tuple[list[int], object]:
    it = iter(dm.train_dataloader()) if it is None else it
    out = []
    for _ in range(steps):
        out += dm.on_before_batch_transfer(next(it), 0)["index"].flatten().tolist()
    return out, it


def test_spike_samples_stay_skipped_in_later_epochs(tmp_path):
    dm = _dm(write_source(tmp_path, "web", n_docs=12, seed=4))
    n = dm.stream.sources[0].train_size  # samples per epoch
    first, _ = _ids(dm, 3)
    spike = first[2:5]  # the samples of the steps before a spike
    dm.skip_samples(spike)
    rest, _ = _ids(dm, (3 * n - len(first)) // B)
    seen = first + rest
    epochs = [Counter(seen[:n]), Counter(seen[n: 2 * n - 3]), Counter(seen[2 * n - 3: 3 * n - 6])]
    assert all(c[s] == 1 for c in epochs[:1] for s in spike)  # served once, before the spike
    for later in epochs[1:]:
        assert not set(spike) & set(later)  # never again
        assert set(later) == set(epochs[0]) - set(spike)  # everything else, once each
        assert max(later.values()) == 1
    resumed = _dm(tmp_path / "web")  # the skip list is in the state: it survives resume
    resumed.load_state_dict(dm.state_dict())
    more, _ = _ids(resumed, n // B)
    assert not set(spike) & set(more)
