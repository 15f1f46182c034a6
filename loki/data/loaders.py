"""The datasets behind ``LokiDataModule``'s loaders, and the consumed-state cursor they share.

``TrainSteps`` yields step batches tagged ``TAG: (generation, step)``. In the main process it
reads the ``Cursor`` between batches, so a ``reseed`` or ``load_state_dict`` (which bump the
cursor's generation) restarts it from the consumed state; a DataLoader worker works from the
copy it took at start, and the DataModule rebuilds any batch whose tag no longer matches.
``ValBatches`` splits the fixed validation batches over workers.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

from torch.utils.data import IterableDataset, get_worker_info

from loki.data.stream import TrainStream

TAG = "_loki_step"


class Cursor:
    """Shared between the DataModule and its in-process stream: the consumed state."""

    def __init__(self, state: dict) -> None:
        self.state, self.generation, self.yielded = state, 0, -1


class TrainSteps(IterableDataset):
    """Step batches from the consumed state on, one per optimizer step, each tagged."""

    def __init__(self, stream: TrainStream, cursor: Cursor) -> None:
        self.stream, self.cursor = stream, cursor

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        cursor = self.cursor
        generation, state = cursor.generation, copy.deepcopy(cursor.state)
        if info is not None:  # a worker holds a copy of the cursor taken at start: no restarts
            for layout, _ in self.stream.steps(state, worker, workers):
                yield {**self.stream.materialize(layout), TAG: (generation, layout["step"])}
            return
        cursor.yielded = state["step"] - 1  # nothing of this iterator is in flight yet
        while not self.stream.done(state):
            if cursor.generation != generation:
                # reseed / load_state_dict in the main process: start again from the consumed
                # state, past the batches already handed out (those get rebuilt on arrival)
                generation, state = cursor.generation, copy.deepcopy(cursor.state)
                while state["step"] <= cursor.yielded and not self.stream.done(state):
                    state = self.stream.plan(state)[1]
                continue
            layout, state = self.stream.plan(state)
            cursor.yielded = layout["step"]
            yield {**self.stream.materialize(layout), TAG: (generation, layout["step"])}


class ValBatches(IterableDataset):
    """The fixed validation batches, every worker its share."""

    def __init__(self, stream: TrainStream, batches: list) -> None:
        self.stream, self.batches = stream, batches

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        for batch in self.batches[worker::workers]:
            yield self.stream.read_val(batch)
