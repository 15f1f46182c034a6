"""Reading a tokenizer corpus: datasets folders, fsspec URLs, plain text cut into documents,
and the errors for missing entries, malformed or damaged files, documents without a text string
and text that is not UTF-8, each naming the file and line."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

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


def _write_jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


@pytest.mark.parametrize(("record", "message"), [
    ({"text": 12345}, "'text' is int 12345, not a string"),
    ({"text": None}, "'text' is missing or null"),
    ({"id": 1}, "'text' is missing or null"),
    (["a", "list"], "a JSON list, not an object"),
])
def test_a_document_without_a_text_string_is_named_by_line(tmp_path, record, message):
    path = _write_jsonl(tmp_path / "c.jsonl", [{"text": "fine"}, record])
    with pytest.raises(LokiError, match=f"c.jsonl:2: {message}"):
        list(corpus.iter_documents(corpus.corpus_files([path])))


def test_empty_texts_are_documents(tmp_path):
    path = _write_jsonl(tmp_path / "c.jsonl", [{"text": "a"}, {"text": ""}, {"text": "b"}])
    assert list(corpus.iter_documents([tmp_path / "c.jsonl"])) == ["a", "", "b"]
    assert corpus.read_texts([path], 10) == ["a", "", "b"]


@pytest.mark.parametrize("name", ["c.jsonl", "c.txt", "c.jsonl.gz"])
def test_invalid_utf8_is_refused_where_it_is(tmp_path, name):
    data = json.dumps({"text": "fine"}).encode() + b"\n" + b'{"text": "caf\xe9"}\n'
    opener = gzip.open if name.endswith(".gz") else open
    with opener(tmp_path / name, "wb") as fh:
        fh.write(data)
    with pytest.raises(LokiError, match=f"{name}:2: not valid UTF-8"):
        list(corpus.iter_documents([tmp_path / name]))


def test_plain_text_line_ends_read_as_text_mode_reads_them(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"one\r\ntwo\rthree\n\nfour")
    assert list(corpus.iter_documents([tmp_path / "a.txt"])) == ["one\ntwo\nthree\n\nfour"]


@pytest.mark.parametrize("damage", ["cut", "not gzip"])
def test_a_damaged_gzip_file_is_named(tmp_path, damage):
    texts = [{"text": f"document {i} " * 50} for i in range(200)]
    with gzip.open(tmp_path / "c.jsonl.gz", "wt") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in texts))
    data = (tmp_path / "c.jsonl.gz").read_bytes()
    (tmp_path / "c.jsonl.gz").write_bytes(data[:len(data) // 2] if damage == "cut" else b"{}")
    with pytest.raises(LokiError, match=f"cannot read {tmp_path / 'c.jsonl.gz'}: .*cut off"):
        list(corpus.iter_documents([tmp_path / "c.jsonl.gz"]))


def test_a_datasets_row_without_text_is_named(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"text": ["a", None]}).save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(LokiError, match="ds row 1: 'text' is missing or null"):
        list(corpus.iter_documents(corpus.corpus_files([str(tmp_path / "ds")])))


# ---------------------------------------------------------------------- file types
def test_parquet_files_are_read_by_column(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    pq.write_table(pa.table({"body": ["one", "", "three"], "id": [1, 2, 3]}), tmp_path / "a.parquet")
    files = corpus.corpus_files([str(tmp_path)])
    assert files == [tmp_path / "a.parquet"]
    assert list(corpus.iter_documents(files, "body")) == ["one", "", "three"]
    with pytest.raises(LokiError, match="a.parquet has no 'text' column"):
        list(corpus.iter_documents(files))
    pq.write_table(pa.table({"text": ["one", None]}), tmp_path / "a.parquet")
    with pytest.raises(LokiError, match="a.parquet row 1: 'text' is missing or null"):
        list(corpus.iter_documents(files))
    (tmp_path / "a.parquet").write_bytes((tmp_path / "a.parquet").read_bytes()[:50])
    with pytest.raises(LokiError, match="cannot read .*a.parquet: .*cut off or damaged"):
        list(corpus.iter_documents(files))


@pytest.mark.parametrize("entry", ["data.bin", "*.bin", "*"])
def test_files_of_other_types_are_refused_naming_the_types_read(tmp_path, monkeypatch, entry):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.bin").write_bytes(b"PAR1\x00\x01binary")
    (tmp_path / "c.jsonl").write_text(json.dumps({"text": "a"}) + "\n")
    with pytest.raises(LokiError, match="corpus file data.bin is not one of the types read: "
                                        ".jsonl, .jsonl.gz, .json.gz, .txt, .txt.gz, .parquet"):
        corpus.corpus_files([entry])


def test_a_folder_says_which_files_it_leaves_out(tmp_path, capsys):
    (tmp_path / "c.jsonl").write_text(json.dumps({"text": "a"}) + "\n")
    (tmp_path / "notes.md").write_text("# notes")
    for name in ("filter_report.json", "filter_report.md"):  # loki filter's, beside its shards
        (tmp_path / name).write_text("{}")
    assert corpus.corpus_files([str(tmp_path)]) == [tmp_path / "c.jsonl"]
    assert f"1 file(s) in {tmp_path} not of the types read are left out: notes.md\n" in \
        capsys.readouterr().out


def test_a_file_listed_twice_is_read_once(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t").mkdir()
    for name in ("small", "other"):
        _write_jsonl(tmp_path / "t" / f"{name}.jsonl", [{"text": name}])
    files = corpus.corpus_files(["t/small.jsonl", "t/*.jsonl", str(tmp_path / "t")])
    assert files == [Path("t/small.jsonl"), Path("t/other.jsonl")]
    assert list(corpus.iter_documents(files)) == ["small", "other"]
    # two files, each named once in the message however often it was listed again
    assert ("2 file(s) listed more than once, read once: t/small.jsonl, t/other.jsonl"
            in capsys.readouterr().out)
