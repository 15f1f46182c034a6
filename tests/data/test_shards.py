"""Shard format: round trip, dtypes, remote reads, and every bad input names its file."""

from __future__ import annotations

import json

import fsspec
import numpy as np
import pytest

from loki.data.datamodule import LokiDataModule
from loki.data.shard_writer import ShardWriter
from loki.data.shards import TokenShardSet, token_dtype
from loki.errors import LokiError
from tests.data.fixtures import TOKENIZER, write_source


def test_round_trip_counts_and_document_index(tmp_path):
    docs = [[1, 2, 3], [4, 5], list(range(10, 40))]
    w = ShardWriter(tmp_path / "web", "web", TOKENIZER, shard_tokens=6)
    for d in docs:
        w.add_document(d)
    manifest = w.close()
    assert manifest["num_documents"] == 3 and manifest["num_tokens"] == 4 + 3 + 31
    shards = TokenShardSet.open(str(tmp_path / "web"))
    stream = np.concatenate([shards.reader(i).read(0, n) for i, n in
                             enumerate(shards.shard_tokens)])
    expected = np.concatenate([np.r_[d, 255] for d in docs])
    assert stream.tolist() == expected.tolist()
    offsets = shards.reader(0).documents(shards, 0)
    assert offsets.tolist() == [0, 4, 7]  # the shard rolls over once it reaches 6 tokens
    assert shards.reader(1).documents(shards, 1).tolist() == [0, 31]
    assert (tmp_path / "web" / "web-00000.tokens").stat().st_size == 7 * 2  # uint16


def test_dtype_follows_vocabulary():
    assert token_dtype(32000) == np.uint16 and token_dtype(65536) == np.uint16
    assert token_dtype(100277) == np.uint32


def test_remote_range_and_cache_read_the_same_tokens(tmp_path):
    folder = write_source(tmp_path)
    fs = fsspec.filesystem("memory")
    for f in folder.iterdir():
        fs.pipe(f"/shards/web/{f.name}", f.read_bytes())
    local = TokenShardSet.open(str(folder))
    remote = TokenShardSet.open("memory://shards/web")
    remote.check("full")
    a = local.reader(1).read(5, 40)
    assert remote.reader(1, "range").read(5, 40).tolist() == a.tolist()
    cached = TokenShardSet.open("memory://shards/web")
    assert cached.reader(1, "cache", str(tmp_path / "cache"), 2).read(5, 40).tolist() == a.tolist()
    for i in range(len(cached.shard_tokens)):  # the cache stays bounded, shard by shard
        cached.reader(i, "cache", str(tmp_path / "cache"), 2)
    assert len(list((tmp_path / "cache").glob("*.tokens"))) <= 2


def _dm(folder, **kw):
    return LokiDataModule(sources={"web": [str(folder)]}, block_size=16, micro_batch_size=2,
                          val_fraction=0, **kw)


def test_truncated_shard_names_the_file(tmp_path):
    folder = write_source(tmp_path)
    shard = folder / "web-00001.tokens"
    shard.write_bytes(shard.read_bytes()[:-6])
    dm = _dm(folder)
    with pytest.raises(LokiError, match="web-00001.tokens.*truncated"):
        dm.setup("fit")


def test_checksum_mismatch_names_the_file(tmp_path):
    folder = write_source(tmp_path)
    shard = folder / "web-00002.tokens"
    data = bytearray(shard.read_bytes())
    data[3] ^= 0xFF  # same size, different content: only a checksum can see it
    shard.write_bytes(bytes(data))
    _dm(folder, verify="size").setup("fit")
    with pytest.raises(LokiError, match="checksum mismatch for .*web-00002.tokens"):
        _dm(folder, verify="full").setup("fit")


def test_shards_from_another_tokenizer_are_refused(tmp_path):
    web = write_source(tmp_path)
    other = write_source(tmp_path, "synthetic", tokenizer={**TOKENIZER, "vocab_hash": "other"})
    with pytest.raises(LokiError, match=r"synthetic/manifest.json.*vocab_hash other"):
        LokiDataModule(sources={"web": [str(web)], "synthetic": [str(other)]})
    with pytest.raises(LokiError, match=r"web/manifest.json.*testhash00000000.*cl100k_base"):
        LokiDataModule(sources={"web": [str(web)]}, tokenizer="cl100k_base")


def test_empty_missing_and_unreadable_inputs(tmp_path):
    with pytest.raises(LokiError, match="sources is empty"):
        LokiDataModule(sources={"web": []})
    with pytest.raises(LokiError, match="no token shards match .*nothing-here"):
        LokiDataModule(sources={"web": [str(tmp_path / "nothing-here*")]})
    with pytest.raises(LokiError, match="manifest not found: .*absent/manifest.json"):
        LokiDataModule(sources={"web": [str(tmp_path / "absent")]})
    with pytest.raises(LokiError, match="memory://no/such/manifest.json"):
        LokiDataModule(sources={"web": ["memory://no/such/manifest.json"]})
    with pytest.raises(LokiError, match="cannot open nosuchproto://x"):
        LokiDataModule(sources={"web": ["nosuchproto://x/manifest.json"]})
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(LokiError, match="bad/manifest.json is not a loki-token-shards"):
        LokiDataModule(sources={"web": [str(tmp_path / "bad")]})


def test_missing_shard_file_of_a_remote_set_names_it(tmp_path):
    folder = write_source(tmp_path)
    fs = fsspec.filesystem("memory")
    fs.pipe("/gone/web/manifest.json", (folder / "manifest.json").read_bytes())
    with pytest.raises(LokiError, match="memory://gone/web/web-00000.tokens"):
        TokenShardSet.open("memory://gone/web").check("size")


def test_corpus_missing_or_empty_names_the_path(tmp_path):
    with pytest.raises(LokiError, match="input not found: .*nope.txt"):
        LokiDataModule(corpus=[str(tmp_path / "nope.txt")])
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(LokiError, match="empty.jsonl is empty"):
        LokiDataModule(corpus=[str(tmp_path / "empty.jsonl")])
