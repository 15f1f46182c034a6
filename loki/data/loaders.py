"""The datasets behind ``LokiDataModule``'s loaders, and the consumed-state cursor they share.

``TrainSteps`` yields step batches tagged ``TAG: (generation, step)``. In the main process it
reads the ``Cursor`` between batches, so a ``reseed`` or ``load_state_dict`` (which bump the
cursor's generation) restarts it from the consumed state; a DataLoader worker works from the
copy it took at start, and the DataModule rebuilds any batch whose tag no longer matches.
``ValBatches`` splits the fixed validation batches over workers.
"""

from __future__ import annotations

import copy
import signal
from collections.abc import Iterator

from torch.utils.data import IterableDataset, get_worker_info

from loki.data.stream import TrainStream

TAG = "_loki_step"


def leave_ctrl_c_to_training(worker_id: int) -> None:
    """A loader worker's ``worker_init_fn``: ignore SIGINT. A terminal's Ctrl-C reaches every
    process of the run; a worker it ended would end the loader before the training process could
    save at its next check step (``callbacks.cluster_signals``). Workers stop when the training
    process shuts its loader down, or when it dies."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Cursor:
    """Shared between the DataModule and its in-process stream: the consumed state. Every change
    but consumption (a loaded state, a reseed, skipped samples) bumps ``generation``, so batches
    made before it are made again from the consumed state."""

    def __init__(self, state: dict) -> None:
        self.state, self.generation, self.yielded = state, 0, -1

    def advance(self, stream: TrainStream, batch: dict, generation: int | None,
                step: int | None) -> dict:
        """Consume the next step batch; returns ``batch``, or the step rebuilt when ``batch``
        was made under another generation or for another step."""
        state = self.state
        layout, nxt = stream.plan(state)
        if generation != self.generation or step != state["step"]:
            # made before a reseed / state load, or out of step: rebuild from the consumed state
            batch = stream.materialize(layout)
        self.state = nxt
        return batch

    def load(self, state: dict) -> None:
        """Continue from a saved stream state (a copy of it)."""
        self.state = copy.deepcopy(state)
        self.generation += 1

    def reseed(self, seed: int) -> None:
        """Record a reseed at the consumed position (for every source and interleaved kind)."""
        state = self.state
        state["reseeds"].append({"seed": int(seed), "at": dict(state["consumed"]),
                                 "interleave_at": dict(state.get("interleave_pos", {})),
                                 "step": state["step"]})
        state["seed"] = int(seed)
        self.generation += 1

    def skip(self, ids: list[int]) -> None:
        """Add global sample ids to those never served again."""
        state = self.state
        state["skipped"] = sorted(set(state.get("skipped", [])) | {int(i) for i in ids})
        self.generation += 1


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
