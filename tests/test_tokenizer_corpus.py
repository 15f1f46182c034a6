"""Reading a tokenizer corpus: datasets folders, fsspec URLs, plain text cut into documents,
and the errors for missing entries and malformed JSONL."""

from __future__ import annotations

import json

import pytest

import loki.tokenizer_corpus as corpus
from loki.errors import LokiError


def test_datasets_folder_corpus(tmp_path):
    datasets = pytest.importorskip("datasets")
    texts = [f"document {i} about tokenizers and merges" for i in range(20)]
    datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(tmp_path / "ds"))
    files = corpus.corpus_files([str(tmp_path / "ds")])
    assert list(corpus.iter_documents(files)) == texts


def test_fsspec_url_corpus():
    import fsspec

    fs = fsspec.filesystem("memory")
    docs = [f"remote document {i}" for i in range(5)]
    with fs.open("/loki-corpus/part.jsonl", "w") as fh:
        fh.write("".join(json.dumps({"text": d}) + "\n" for d in docs))
    files = corpus.corpus_files(["memory://loki-corpus/*.jsonl"])
    assert len(files) == 1 and files[0].endswith("loki-corpus/part.jsonl")
    assert list(corpus.iter_documents(files)) == docs
    assert corpus.corpus_manifest(files)[0]["bytes"] > 0
    fs.rm("/loki-corpus", recursive=True)


def test_plain_text_is_cut_into_documents(tmp_path):
    para = "word " * 2000 + "\n\n"
    (tmp_path / "a.txt").write_text(para * 20)
    docs = list(corpus.iter_documents([tmp_path / "a.txt"]))
    assert len(docs) > 1 and "".join(docs) == para * 20


def test_bad_corpus_entries(tmp_path):
    with pytest.raises(LokiError, match="does not exist"):
        corpus.corpus_files([str(tmp_path / "missing.jsonl")])
    (tmp_path / "bad.jsonl").write_text('{"txt": "no text field"}\n')
    with pytest.raises(LokiError, match="bad.jsonl:1"):
        list(corpus.iter_documents([tmp_path / "bad.jsonl"]))
