"""The inputs of ``loki tokenize``: every bad file is refused in one line naming the file."""

from __future__ import annotations

import gzip
import json

import pytest

from loki.data.tokenize_inputs import read_documents
from loki.errors import LokiError

GOOD = json.dumps({"text": "fine", "metadata": {"source": "web"}})


def _read(path):
    return list(read_documents(path, "web"))


@pytest.mark.parametrize("lines, error", [
    ([GOOD] * 20 + ['{"text": "bad\x01"}'],
     ":21: not a JSON record (Invalid control character at column 14)"),
    ([GOOD, "", GOOD, "  ", GOOD, '{"body": "no text"}'], ":6: the record has no 'text' string"),
    ([GOOD, '["a", "b"]'], ":2: expected an object with a 'text' string, not an array"),
    ([GOOD, '"just text"'], ":2: expected an object with a 'text' string, not a string"),
    ([json.dumps({"text": "x", "metadata": "web"})], ":1: 'metadata' is not an object"),
])
@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_a_bad_record_is_named_by_its_file_line(tmp_path, lines, error, suffix):
    path = tmp_path / f"docs{suffix}"
    opener = gzip.open if suffix.endswith(".gz") else open
    with opener(path, "wt") as f:
        f.write("\n".join(lines) + "\n")
    with pytest.raises(LokiError) as err:
        _read(path)
    assert str(err.value) == f"{path}{error}"


def test_invalid_utf8_in_jsonl_is_named_by_its_line(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_bytes(f"{GOOD}\n{GOOD}\n".encode() + b'{"text": "caf\xe9"}\n')
    with pytest.raises(LokiError, match=r"docs.jsonl:3: not UTF-8 text \(byte 0xe9 at column 14\)"):
        _read(path)


@pytest.mark.parametrize("last", [b'{"text": "cut off mid-rec', b'{"text": "caf\xc3'])
@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_a_file_cut_off_mid_record_is_named_as_truncated(tmp_path, last, suffix):
    path = tmp_path / f"docs{suffix}"
    opener = gzip.open if suffix.endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(f"{GOOD}\n{GOOD}\n".encode() + last)
    with pytest.raises(LokiError) as err:
        _read(path)
    assert str(err.value) == (f"{path}:3: the last line has no newline and does not parse: the "
                              "file may be truncated; restore it, or take it out of --inputs")


def test_a_last_line_without_newline_that_parses_is_read(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text(f"{GOOD}\n{GOOD}")
    assert _read(path) == [("web", "fine"), ("web", "fine")]


def test_records_in_crlf_files_read_as_before(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_bytes(b'{"text": "a\\r\\nb"}\r\n\r\n{"text": "c", "source": "synthetic"}\r\n')
    assert _read(path) == [("web", "a\r\nb"), ("synthetic", "c")]


def test_a_parquet_file_that_is_not_one_is_named(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    good = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"text": ["a", "b", None]}), good)
    with pytest.raises(LokiError, match=r"docs.parquet: row 3: the record has no 'text' string"):
        _read(good)
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(good.read_bytes()[:40])
    with pytest.raises(LokiError, match=r"^cannot read documents from \S*truncated.parquet: "):
        _read(truncated)


def test_a_text_file_must_be_utf8_like_jsonl(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"first line\nsecond: caf\xe9 au lait\n")
    with pytest.raises(LokiError, match=r"notes.txt:2: not UTF-8 text \(byte 0xe9 at column 12\)"):
        _read(path)
    path.write_bytes("caf\u00e9\r\nau lait\r".encode())
    assert _read(path) == [("web", "caf\u00e9\nau lait\n")]  # as read_text gives it


def test_a_file_named_twice_is_read_once_and_said(tmp_path, monkeypatch):
    from loki.data.tokenize_inputs import expand_inputs

    multi = tmp_path / "multi"
    multi.mkdir()
    for name in ("p1.jsonl", "p2.jsonl"):
        (multi / name).write_text(GOOD + "\n")
    monkeypatch.chdir(tmp_path)
    said = []
    files = expand_inputs(["multi", "multi/p1.jsonl", f"{multi}/*.jsonl", "./multi/p2.jsonl"],
                          log=said.append)
    assert [str(f) for f in files] == ["multi/p1.jsonl", "multi/p2.jsonl"]
    # two files, each named once, by its first name, however often it was named again
    assert said == ["2 input file(s) named more than once, read once: multi/p1.jsonl, "
                    "multi/p2.jsonl"]
    said.clear()
    assert expand_inputs(["multi"], log=said.append) == files and said == []
