"""``LokiDataModule``: token shards -> step batches, with warmup, mixture and exact resume.

Training yields one *step batch* per optimizer step (see the team contract)::

    {"kind": "lm", "input_ids": (A, B, T) long, "labels": (A, B, T) long,
     "index": (A, B) long global sample ids, "source": (A, B) long source ids}

A (accumulated micro-batches) follows ``BatchSizeWarmup`` at the tokens seen so far, B is
``micro_batch_size``, T is ``block_size``; each sample is T + 1 packed tokens (documents joined
by end-of-text), shifted by one into input and label. Validation yields fixed ``{"input_ids":
(B, T), "labels": (B, T)}`` batches.

Consumption, not production, is what the state counts: every step batch leaves its loader with a
``(generation, step)`` tag, and ``on_before_batch_transfer`` (run by the trainer in the main
process for the batch it is about to train on, after any prefetching) advances the consumed
state and drops the tag. A batch that does not match the consumed state (made before a
``reseed`` or ``load_state_dict``) is rebuilt from the consumed state there, so what the model
sees is always exactly the uninterrupted stream. Lightning 2.6 saves ``state_dict()`` in every
checkpoint under the class name and calls ``load_state_dict`` on ``fit(ckpt_path=...)`` before
the loaders start. The consumed state and its changes are ``Cursor``'s (``loki/data/loaders.py``);
what is read and the checks on it (tokenizer, files, model) are ``loki/data/sources.py``'s.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
from collections.abc import Callable
from typing import Any, Literal

import lightning as L
from torch.utils.data import DataLoader

from loki.data.loaders import TAG, Cursor, TrainSteps, ValBatches, leave_ctrl_c_to_training
from loki.data.schedules import BatchSizeWarmup, MixtureSchedule, parse_tokens
from loki.data.shards import TokenShardSet, expand_locations
from loki.data.sources import (
    check_model,
    check_tokenizer,
    corpus_folder,
    corpus_sources,
    open_checked,
    open_corpus,
    tokenize_corpus,
)
from loki.data.stream import Interleave, SourceSamples, TrainStream, initial_state
from loki.errors import LokiError

log = logging.getLogger(__name__)
STATE_VERSION = 1


class LokiDataModule(L.LightningDataModule):
    def __init__(
        self,
        sources: dict[str, list[str]] | None = None,
        corpus: list[str] | None = None,
        val_sources: list[str] | None = None,
        val_fraction: float = 0.01,
        val_samples: int | None = None,
        block_size: int = 256,
        micro_batch_size: int = 8,
        batch_size: BatchSizeWarmup | None = None,
        mixture: dict[str, float | str] | None = None,
        max_tokens: int | str | None = None,
        seed: int = 1234,
        shuffle_window: int = 0,
        num_workers: int = 0,
        tokenizer: str | None = None,
        verify: Literal["full", "size"] = "full",
        remote: Literal["range", "cache"] = "range",
        cache_dir: str = "data/cache",
        max_cached_shards: int = 8,
    ) -> None:
        """Stream packed token sequences from token shards (or a raw corpus) for ``LokiLM``.

        Args:
            sources: source name -> shard folders, ``manifest.json`` paths, globs or fsspec URLs
                (``s3://bucket/web/manifest.json``) written by ``loki tokenize``.
            corpus: instead of ``sources``: raw ``*.txt`` / ``*.jsonl[.gz]`` / ``*.parquet`` files,
                folders or globs, tokenized once (``tokenizer``, default cl100k_base, offline)
                into cached shards under ``cache_dir``. For the demo and quick experiments.
            val_sources: shard folders/manifests used only for validation (all their samples).
            val_fraction: without ``val_sources``: hold out every round(1/fraction)-th sample of
                every shard for validation (never trained on). 0 = no validation.
            val_samples: at most this many validation sequences (evenly spaced; fixed).
            block_size: tokens per training sequence (T); T + 1 are read per sample.
            micro_batch_size: sequences per micro-batch per rank (B); memory is set by this.
            batch_size: global batch size warmup in sequences (ramp or points); default: one
                micro-batch per rank, no accumulation.
            mixture: source -> weight or ``"TOKENS:WEIGHT, ..."`` points over tokens seen, e.g.
                ``{web: 1.0, synthetic: "0:0.11, 20B:0"}``; default: proportional to size.
            max_tokens: end the stream after this many global tokens (``500B`` = 2 epochs of
                250B); default: endless (stop with the trainer's ``max_steps``).
            seed: the data order seed (shard order, sample order, mixture draws).
            shuffle_window: shards shuffled together (0 = all: full shuffle). Set e.g. 8 for
                remote shards with ``remote: cache`` so reads stay within a few shards.
            num_workers: DataLoader worker processes for training batches.
            tokenizer: the model's tokenizer spec; with ``sources`` every shard manifest must
                carry its ``vocab_hash`` (default: take the shards' tokenizer).
            verify: ``full`` (default) hashes each shard at setup (each rank its share, in
                parallel threads) against the manifest's sha256, so a flipped bit stops the
                run; ``size`` checks only every file's size (truncation), for corpora too
                large to hash at every start.
            remote: read remote shards by byte ``range`` or download them whole into a bounded
                ``cache`` (``max_cached_shards`` shards under ``cache_dir``).
            cache_dir: tokenized corpus cache and remote shard cache.
            max_cached_shards: remote shards kept in the local cache at once.
        """
        super().__init__()
        # Plain values only: checkpoints must load with torch.load(weights_only=True).
        self.save_hyperparameters(ignore=["batch_size"])
        self.hparams["batch_size"] = None if batch_size is None else dataclasses.asdict(batch_size)
        if (sources is None) == (corpus is None):
            raise LokiError("set exactly one of data.sources (token shards) or data.corpus "
                            "(raw text files)")
        if block_size < 1 or micro_batch_size < 1:
            raise LokiError("data.block_size and data.micro_batch_size must be positive")
        if not 0 <= val_fraction < 0.5:
            raise LokiError(f"data.val_fraction {val_fraction} must be in [0, 0.5)")
        self.block_size, self.micro_batch_size = block_size, micro_batch_size
        self.warmup = batch_size or BatchSizeWarmup()
        self.mixture_spec = mixture
        self.max_tokens = None if max_tokens is None else parse_tokens(max_tokens)
        self.seed, self.shuffle_window, self.num_workers = int(seed), shuffle_window, num_workers
        self.val_fraction, self.val_samples = val_fraction, val_samples
        self.verify, self.remote = verify, remote
        self.cache_dir, self.max_cached_shards = cache_dir, max_cached_shards
        self.rank, self.world_size = 0, 1
        self.interleaves: list[Interleave] = []
        self.stream: TrainStream | None = None
        self._pending_state: dict | None = None
        self._tokenizer_spec = tokenizer
        if corpus is not None:
            self.corpus_files, self._tokenizer = open_corpus(corpus, tokenizer)
            self.source_locations: dict[str, list[str]] = {}
        else:
            self.corpus_files = []
            if not sources or any(not v for v in sources.values()):
                raise LokiError("data.sources is empty: give each source at least one shard "
                                "folder, manifest or glob")
            self.source_locations = {k: list(v) for k, v in sources.items()}
            sets = [TokenShardSet.open(loc) for locs in self.source_locations.values()
                    for loc in expand_locations(locs)]
            self._tokenizer = check_tokenizer(sets, tokenizer)
        self.val_locations = list(val_sources or [])
        self.cursor = Cursor(initial_state(self.seed, list(self.source_locations)))

    # ------------------------------------------------------------------ vocabulary
    @property
    def vocab_size(self) -> int:
        """Ids the model must embed (from the tokenizer / shard manifests)."""
        return int(self._tokenizer["vocab_size"])

    @property
    def vocab_hash(self) -> str:
        """The tokenizer's ``vocab_hash``; every shard manifest carries the same."""
        return str(self._tokenizer["vocab_hash"])

    @property
    def tokenizer_spec(self) -> str:
        """What ``LokiTokenizer.from_spec`` loads to decode this data ("cl100k_base" or a path)."""
        return str(self._tokenizer.get("spec") or self._tokenizer.get("name"))

    # ------------------------------------------------------------------ corpus mode
    def prepare_data(self) -> None:
        """Tokenize the raw corpus once (cached by file names, sizes, times and tokenizer)."""
        if not self.corpus_files:
            return
        folder = corpus_folder(self.corpus_files, self.vocab_hash, self.cache_dir)
        tokenize_corpus(self.corpus_files, folder, self._tokenizer["spec"], log=log.info)

    # ------------------------------------------------------------------ setup
    def distribute(self, rank: int, world_size: int) -> None:
        """Set this process's rank and the world size (``setup`` takes them from the trainer)."""
        if not 0 <= rank < world_size:
            raise LokiError(f"rank {rank} outside world size {world_size}")
        self.rank, self.world_size = rank, world_size
        if self.stream is not None:
            self.stream.rank, self.stream.world_size = rank, world_size

    def setup(self, stage: str | None = None) -> None:
        if self.trainer is not None:
            self.distribute(self.trainer.global_rank, self.trainer.world_size)
            check_model(getattr(self.trainer, "lightning_module", None), self.vocab_hash,
                        self.vocab_size)
        if self.stream is not None:
            return
        if self.corpus_files:
            self.prepare_data()  # no-op when cached; covers use without a Trainer
            folder = corpus_folder(self.corpus_files, self.vocab_hash, self.cache_dir)
            self.source_locations = corpus_sources(folder)
            self.cursor.state["consumed"] = {s: 0 for s in self.source_locations}
        sources, offset = [], 0
        val_every = 0 if self.val_locations or not self.val_fraction else max(
            2, round(1 / self.val_fraction))
        for name, locs in self.source_locations.items():
            src = SourceSamples(name, self._open(expand_locations(locs)), self.block_size,
                                val_every, self.shuffle_window, offset)
            if src.train_size == 0:
                raise LokiError(f"source {name} ({', '.join(locs)}) has no training sequence of "
                                f"{self.block_size + 1} tokens")
            offset += src.num_samples
            sources.append(src)
        names = [s.name for s in sources]
        mixture = self.mixture_spec or {s.name: float(s.train_size) for s in sources}
        self.warmup.check(self.micro_batch_size, self.world_size)
        self.stream = TrainStream(
            sources, self.warmup, MixtureSchedule(mixture, names), self.micro_batch_size,
            self.block_size, self.rank, self.world_size, self.max_tokens, self.remote,
            os.path.join(self.cache_dir, "remote"), self.max_cached_shards, self.interleaves)
        self._val_extra = []
        for k, loc in enumerate(expand_locations(self.val_locations)):
            src = SourceSamples(f"val{k}", self._open([loc]), self.block_size, 0, 0, 0)
            self._val_extra += [(src, f, i) for f, n in enumerate(src.samples.tolist())
                                for i in range(n)]
        if self._pending_state is not None:
            state, self._pending_state = self._pending_state, None
            self.load_state_dict(state)

    def _open(self, manifests: list[str]) -> list[TokenShardSet]:
        return open_checked(manifests, self._tokenizer_spec, self.verify, self.rank,
                            self.world_size)

    # ------------------------------------------------------------------ loaders
    def train_dataloader(self) -> DataLoader:
        self._require_setup()
        return DataLoader(TrainSteps(self.stream, self.cursor), batch_size=None,
                          num_workers=self.num_workers, worker_init_fn=leave_ctrl_c_to_training,
                          persistent_workers=False, prefetch_factor=2 if self.num_workers else None)

    def val_dataloader(self) -> DataLoader | list:
        self._require_setup()
        batches = self.stream.val_batches(self._val_extra, self.val_samples)
        if not batches:
            log.warning("no validation batches (corpus too small or val_fraction 0)")
            return []
        return DataLoader(ValBatches(self.stream, batches), batch_size=None,
                          num_workers=min(self.num_workers, 1),
                          worker_init_fn=leave_ctrl_c_to_training)

    def test_dataloader(self) -> DataLoader | list:
        """``loki test``: the held-out validation sequences (the data has no test split of its
        own), scored as ``test/loss`` by ``LokiLM.test_step``."""
        return self.val_dataloader()

    def _require_setup(self) -> None:
        if self.stream is None:
            self.setup("fit")

    # ------------------------------------------------------------------ consumption
    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if not isinstance(batch, dict) or TAG not in batch:
            return batch
        generation, step = batch.pop(TAG)
        return self.advance(batch, generation, step)

    def advance(self, batch: dict, generation: int | None = None, step: int | None = None,
                ) -> dict:
        """Record that ``batch`` (the next step batch) is being trained on; returns the batch
        to use. Called by ``on_before_batch_transfer``; call it yourself outside a Trainer."""
        return self.cursor.advance(self.stream, batch, generation, step)

    @property
    def state(self) -> dict:
        """The consumed stream state (a copy)."""
        return copy.deepcopy(self.cursor.state)

    @property
    def tokens_seen(self) -> int:
        return int(self.cursor.state["tokens"])

    # ------------------------------------------------------------------ resume and rollback
    def state_dict(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "stream": self.state,
                "layout": self._layout_signature()}

    def _layout_signature(self) -> dict:
        if self.stream is None:
            return {}
        return {"block_size": self.block_size, "val_fraction": self.val_fraction,
                "samples": {s.name: s.num_samples for s in self.stream.sources}}

    def check_resume(self, state_dict: dict[str, Any]) -> None:
        """Raise ``LokiError`` unless a checkpoint's data state continues this data: the same
        state version and, once set up, the same layout (``loki fit``'s preflight calls it
        before anything is written; ``load_state_dict`` again)."""
        if state_dict.get("version") != STATE_VERSION:
            raise LokiError(f"data state version {state_dict.get('version')} is not "
                            f"{STATE_VERSION}; this checkpoint is from another loader")
        saved, now = state_dict.get("layout", {}), self._layout_signature()
        if self.stream is not None and saved and saved != now:
            raise LokiError(f"the checkpoint's data layout {saved} differs from the configured "
                            f"data {now}; resuming would not continue the same stream")

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.check_resume(state_dict)
        if self.stream is None:  # restored before setup: apply once the sources are known
            self._pending_state = state_dict
            return
        self.cursor.load(state_dict["stream"])

    def reseed(self, seed: int) -> None:
        """Change the order of every sample not consumed yet (from the consumed position on);
        what was consumed stays as it was. Recorded in the state, so it survives resume."""
        if not 0 <= int(seed) < 2**63:
            raise LokiError(f"seed {seed} must be in [0, 2**63)")
        self.cursor.reseed(seed)

    def skip_samples(self, ids: list[int]) -> None:
        """Never serve these global sample ids again, in this epoch or any later one (the
        samples of the steps that led to a loss spike). Recorded in the state."""
        self.cursor.skip(ids)

    def attach_interleave(self, kind: str, every_n: int, make_step: Callable[[int], dict]) -> None:
        """Make every ``every_n``-th step batch (1-based global step index: steps n-1, 2n-1, ...
        counted from 0, identical on every rank) come from ``make_step(index)``.

        Contract: ``index`` counts this kind's steps from 0 over the whole run (saved in the
        state, so it continues after resume); ``make_step`` must return this rank's step batch
        for it deterministically (``{"kind": kind, ...tensors with a leading A axis}``) and be
        picklable when DataLoader workers are spawned (it runs in the workers). A plain
        ``make_step`` adds no tokens to the clock; a sized one (``step_units`` / ``step_tokens``
        / ``build``, see ``loki.data.stream.Interleave``) follows the batch-size warmup, adds its
        tokens to the one token clock (warmup, mixture, ``max_tokens`` and the LR) and is
        reseeded with the LM stream. Call it before the train loader starts (e.g. from a
        callback's ``setup``).
        """
        if every_n < 2:
            raise LokiError(f"interleave every_n must be >= 2 (got {every_n})")
        if kind == "lm":
            raise LokiError("interleaved steps need their own kind, not 'lm'")
        self.interleaves[:] = [i for i in self.interleaves if i.kind != kind]
        self.interleaves.append(Interleave(kind, every_n, make_step))
