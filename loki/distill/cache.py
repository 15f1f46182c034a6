"""Candidate cache: teacher continuations for distillation prompts, in the student's tokens.

Layout of a cache folder (written by ``loki distill build``)::

    <folder>/manifest.json       format, student tokenizer (vocab_hash, vocab_size, pad_id),
                                 prompt_tokens Lp, max_new_tokens C, sources (name, kind,
                                 identity, sampling parameters, base seed), soft_top_k K, shards,
                                 regeneration report
    <folder>/token_bytes.npy     (V,) UTF-8 bytes of each student token (per-byte normalization
                                 of candidates produced during training by online teachers)
    <folder>/shards/cand-00003/  one folder per build task (rank), ``.npy`` arrays read by row:
        prompt_ids   (N, Lp)      int32   the prompt (a document prefix)
        prompt_index (N,)         int64   global prompt number (its place in the prompt set)
        cont_ids     (N, k, C)    int32   continuation of each source, padded with pad_id
        cont_len     (N, k)       int32   tokens of each continuation (0: dropped)
        n_bytes      (N, k)       int32   UTF-8 bytes of each continuation
        seeds        (N, k)       int64   sampling seed that produced the kept continuation
        attempts     (N, k)       int16   generations tried (regenerations after benchmark copies)
        soft_ids     (N, k, C, K) int32   optional top-k soft targets (-1: none)
        soft_logprobs (N, k, C, K) float16
    <folder>/shards/cand-00003.json   the task's completion marker: counts, report, array sizes

Source 0 is always the ground truth (the document's own continuation).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from loki.data.order import SourceOrder
from loki.errors import LokiError

FORMAT = "loki-distill-cache"
VERSION = 1
MANIFEST = "manifest.json"
ARRAYS = ("prompt_ids", "prompt_index", "cont_ids", "cont_len", "n_bytes", "seeds", "attempts")
SOFT_ARRAYS = ("soft_ids", "soft_logprobs")


def shard_name(rank: int) -> str:
    return f"cand-{rank:05d}"


def write_shard(folder: str | Path, rank: int, arrays: dict[str, np.ndarray], info: dict) -> Path:
    """Write one task's arrays, then its JSON marker (last, so a marker means complete)."""
    shards = Path(folder) / "shards"
    out = shards / shard_name(rank)
    out.mkdir(parents=True, exist_ok=True)
    n = len(arrays["prompt_index"])
    for name in (*ARRAYS, *SOFT_ARRAYS):
        if name in arrays:
            if len(arrays[name]) != n:
                raise ValueError(f"array {name} has {len(arrays[name])} rows, expected {n}")
            np.save(out / f"{name}.npy", arrays[name])
    marker = {**info, "rank": rank, "prompts": n,
              "arrays": {k: list(v.shape) for k, v in arrays.items()}}
    tmp = shards / f"{shard_name(rank)}.json.part"
    tmp.write_text(json.dumps(marker, indent=1) + "\n")
    tmp.rename(shards / f"{shard_name(rank)}.json")
    return out


def finalize(folder: str | Path, header: dict, tasks: int) -> dict:
    """Gather the task markers into ``manifest.json``; every task must have finished."""
    folder = Path(folder)
    markers = []
    missing = []
    for rank in range(tasks):
        path = folder / "shards" / f"{shard_name(rank)}.json"
        if not path.is_file():
            missing.append(rank)
            continue
        markers.append(json.loads(path.read_text()))
    if missing:
        raise LokiError(f"distillation cache {folder}: tasks {missing} have not finished; "
                        "run `loki distill build` again (finished tasks are skipped)")
    report = _sum_reports([m["report"] for m in markers])
    manifest = {"format": FORMAT, "version": VERSION, **header,
                "prompts": sum(m["prompts"] for m in markers),
                "shards": [{"name": shard_name(m["rank"]), "prompts": m["prompts"],
                            "arrays": m["arrays"]} for m in markers],
                "report": report}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    (folder / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    return manifest


def _sum_reports(reports: list[dict]) -> dict:
    total: dict = {}
    for rep in reports:
        for source, counts in rep.items():
            slot = total.setdefault(source, {})
            for key, value in counts.items():
                slot[key] = slot.get(key, 0) + value
    return total


class RowFile:
    """One ``.npy`` array read row by row with ``os.pread`` (no memory map, no full load)."""

    def __init__(self, path: Path) -> None:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            self.shape, fortran, self.dtype = read(f)
            self.offset = f.tell()
        if fortran:
            raise LokiError(f"{path}: Fortran-ordered arrays are not cache arrays")
        self.path = path
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def __len__(self) -> int:
        return int(self.shape[0])

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` (ascending reads are sequential), as a new array. The file is opened
        per call: a 1.4B cache has thousands of files, more than a process may hold open."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        flat = out.reshape(len(rows), -1).view(np.uint8).reshape(len(rows), self.row_bytes)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            i = 0
            while i < len(rows):  # one read per run of consecutive rows
                j = i + 1
                while j < len(rows) and rows[j] == rows[j - 1] + 1:
                    j += 1
                want = (j - i) * self.row_bytes
                data = os.pread(fd, want, self.offset + int(rows[i]) * self.row_bytes)
                if len(data) != want:
                    raise LokiError(f"distillation cache file {self.path} is truncated")
                flat[i:j] = np.frombuffer(data, dtype=np.uint8).reshape(j - i, self.row_bytes)
                i = j
        finally:
            os.close(fd)
        return out


@dataclass
class CandidateCache:
    """A finished cache, opened read-only (shards read lazily, row by row)."""

    folder: Path
    manifest: dict

    @classmethod
    def open(cls, folder: str | os.PathLike, vocab_hash: str | None = None) -> CandidateCache:
        folder = Path(folder)
        path = folder / MANIFEST
        if not path.is_file():
            raise LokiError(f"no distillation cache at {folder} (expected {path}); build it with "
                            "`loki distill build --config experiments/distill/<name>.yaml`")
        try:
            manifest = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise LokiError(f"{path} is not valid JSON: {err}") from err
        if manifest.get("format") != FORMAT:
            raise LokiError(f"{path} is not a {FORMAT} manifest")
        cache = cls(folder, manifest)
        if vocab_hash is not None:
            cache.check_vocab(vocab_hash)
        cache._index()
        return cache

    def check_vocab(self, vocab_hash: str) -> None:
        """The cache's candidates are student token ids: they must come from this tokenizer."""
        have = self.manifest["student"]["vocab_hash"]
        if have != vocab_hash:
            raise LokiError(
                f"distillation cache {self.folder} was built for a student tokenizer with "
                f"vocab_hash {have}, but the model trains with vocab_hash {vocab_hash}; rebuild "
                "the cache with the training tokenizer (`loki distill build`)")

    def _index(self) -> None:
        """Row offsets of the shards from the manifest; no array is opened yet.

        At the 1.4B settings the arrays total ~250 GB, so nothing is ever concatenated: a shard's
        ``.npy`` files are opened the first time one of their rows is read (in each process,
        loader workers included) and a batch reads just its rows, shard by shard, with
        positioned reads (``RowFile``). The kernel's page cache holds the file pages once for
        every process; a process's own memory is the batch it builds. (A memory map would do
        the same reads, but every page it touches, with the kernel's fault-around, stays mapped
        and counted in the process's RSS, which then grows with the part of the cache read.)"""
        counts = [int(shard["prompts"]) for shard in self.manifest["shards"]]
        if not sum(counts):
            raise LokiError(f"distillation cache {self.folder} holds no prompts")
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._shards: dict[int, dict[str, np.ndarray]] = {}
        self._order: SourceOrder | None = None
        token_bytes = self.folder / "token_bytes.npy"
        self.token_bytes = np.load(token_bytes) if token_bytes.is_file() else None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_shards": {}}  # files reopen in the receiving process

    def shard_arrays(self, s: int) -> dict[str, RowFile]:
        """Shard ``s``'s arrays as row readers (opened on first use, then kept)."""
        if s not in self._shards:
            shard = self.manifest["shards"][s]
            base = self.folder / "shards" / shard["name"]
            arrays = {}
            for name, shape in shard["arrays"].items():
                file = base / f"{name}.npy"
                if not file.is_file():
                    raise LokiError(f"distillation cache file {file} is missing")
                arr = RowFile(file)
                if list(arr.shape) != shape:
                    raise LokiError(f"distillation cache file {file} has shape {arr.shape}, "
                                    f"manifest says {shape}: truncated or mixed")
                arrays[name] = arr
            self._shards[s] = arrays
        return self._shards[s]

    def gather(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Array ``name`` at global rows ``rows`` (any order), read shard by shard."""
        rows = np.asarray(rows, dtype=np.int64)
        shard = np.searchsorted(self.offsets, rows, side="right") - 1
        out = None
        for s in np.unique(shard).tolist():
            sel = np.nonzero(shard == s)[0]
            arr = self.shard_arrays(s)[name]
            local = rows[sel] - self.offsets[s]
            order = np.argsort(local, kind="stable")  # ascending reads: sequential pages
            part = np.empty((len(sel), *arr.shape[1:]), dtype=arr.dtype)
            part[order] = arr[local[order]]
            if out is None:
                out = np.empty((len(rows), *arr.shape[1:]), dtype=arr.dtype)
            out[sel] = part
        if out is None:
            arr = self.shard_arrays(0)[name]
            out = np.empty((0, *arr.shape[1:]), dtype=arr.dtype)
        return out

    def has(self, name: str) -> bool:
        return name in self.manifest["shards"][0]["arrays"]

    # ------------------------------------------------------------------ facts
    @property
    def sources(self) -> list[str]:
        return [s["name"] for s in self.manifest["sources"]]

    @property
    def num_prompts(self) -> int:
        return int(self.offsets[-1])

    @property
    def num_candidates(self) -> int:
        return len(self.sources)

    @property
    def seq_len(self) -> int:
        """Input length of a candidate row: prompt + continuation, shifted by one."""
        return self.manifest["prompt_tokens"] + self.manifest["max_new_tokens"] - 1

    @property
    def fingerprint(self) -> str:
        text = json.dumps({k: self.manifest[k] for k in ("student", "sources", "shards",
                                                         "prompts")}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    # ------------------------------------------------------------------ batches
    def rows(self, start: int, count: int, seed: int,
             reseeds: list[tuple[int, int]] | tuple = ()) -> np.ndarray:
        """Rows for positions ``[start, start + count)`` of the endless shuffled stream.

        Each epoch is a keyed permutation computed position by position (``SourceOrder``: O(count)
        work and memory, whatever the cache's size); ``reseeds`` ((position, seed), in order)
        re-permute what was not consumed yet, exactly as the LM stream's reseeds do."""
        if self._order is None:
            self._order = SourceOrder("distill", [self.num_prompts])
        pos = np.arange(start, start + count, dtype=np.int64)
        return self._order.locate(pos, seed, list(reseeds))[1]

    def micro_batch(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        """Tensors for prompts ``rows``: input_ids/labels (P, k, T), n_bytes/source (P, k)."""
        a = self.gather
        pad = int(self.manifest["student"]["pad_id"])
        prompt = a("prompt_ids", rows).astype(np.int64)  # (P, Lp)
        cont = a("cont_ids", rows).astype(np.int64)  # (P, k, C)
        cont_len = a("cont_len", rows).astype(np.int64)  # (P, k)
        P, k, C = cont.shape
        Lp = prompt.shape[1]
        full = np.concatenate([np.broadcast_to(prompt[:, None, :], (P, k, Lp)), cont], axis=-1)
        labels = full[..., 1:].copy()  # (P, k, Lp + C - 1)
        labels[..., : Lp - 1] = -100  # positions that predict prompt tokens
        cont_pos = np.arange(C)[None, None, :]
        labels[..., Lp - 1:][cont_pos >= cont_len[..., None]] = -100
        full = np.where(full < 0, pad, full)
        batch = {
            "input_ids": torch.from_numpy(np.ascontiguousarray(full[..., :-1])),
            "labels": torch.from_numpy(labels),
            "n_bytes": torch.from_numpy(a("n_bytes", rows).astype(np.int64)),
            "source": torch.from_numpy(
                np.where(cont_len > 0, np.arange(k)[None, :], -1).astype(np.int64)),
            "index": torch.from_numpy(a("prompt_index", rows).astype(np.int64)),
        }
        if self.has("soft_ids"):
            soft = a("soft_ids", rows)  # (P, k, C, K)
            K = soft.shape[-1]
            ids = np.full((P, k, Lp + C - 1, K), -1, dtype=np.int64)
            lp = np.full((P, k, Lp + C - 1, K), -np.inf, dtype=np.float32)
            ids[:, :, Lp - 1:] = soft
            lp[:, :, Lp - 1:] = a("soft_logprobs", rows)
            batch["soft_ids"] = torch.from_numpy(ids)
            batch["soft_logprobs"] = torch.from_numpy(lp)
        return batch
