"""Inputs: bad lines are counted with a reason and never cost good documents; other formats."""

from __future__ import annotations

import json

import pytest
from conftest import cli_error, filter_config, prose, run_filter, stage_row, write_jsonl


def test_bad_input_is_counted_and_good_documents_survive(tmp_path, rng):
    good = [{"id": f"g{i}", "text": prose(rng)} for i in range(6)]
    raw = tmp_path / "raw" / "mixed.jsonl"
    raw.parent.mkdir()
    with open(raw, "wb") as f:
        f.write(json.dumps(good[0]).encode() + b"\n")
        f.write(b'{"id": "bad-bytes", "text": "caf\xe9 \xff\xfe broken"}\n')  # latin-1, not UTF-8
        f.write(json.dumps(good[1]).encode() + b"\n")
        f.write(b'{"id": "truncated", "text": "no closing\n')  # malformed JSON
        f.write(json.dumps({"id": "empty", "text": "   "}).encode() + b"\n")
        f.write(json.dumps({"id": "none", "body": "text under the wrong key"}).encode() + b"\n")
        f.write(b"[1, 2, 3]\n")  # valid JSON, not an object
        f.write(json.dumps({"id": "huge", "text": "word " * 40_000}).encode() + b"\n")
        for row in good[2:]:
            f.write(json.dumps(row).encode() + b"\n")
    cfg = filter_config(tmp_path, [str(tmp_path / "raw" / "*.jsonl")])
    cfg.input.max_doc_bytes = 100_000
    report, out = run_filter(cfg)
    assert sorted(d["id"] for d in out) == sorted(d["id"] for d in good)
    assert {d["text"] for d in out} == {d["text"] for d in good}
    assert all(d["metadata"]["source"] == "web" for d in out)
    read = stage_row(report, "read")
    assert read["adds_up"] and read["docs_out"] == stage_row(report, "clean")["docs_in"] == 6
    assert read["reasons"] == {"skipped_empty": 2, "skipped_huge": 1, "skipped_malformed_json": 1,
                       "skipped_non_utf8": 1, "skipped_not_an_object": 1}


def test_local_datasets_directory_parquet_and_text(tmp_path, rng):
    import datasets

    texts = [prose(rng) for _ in range(5)]
    ds = datasets.Dataset.from_dict({"text": texts[:3], "id": ["a", "b", "c"],
                                     "source": ["synthetic"] * 3})
    ds.save_to_disk(str(tmp_path / "hfdir"))
    cfg = filter_config(tmp_path / "hf", [str(tmp_path / "hfdir")], input={"format": "hf"})
    _, out = run_filter(cfg)
    assert sorted(d["text"] for d in out) == sorted(texts[:3])
    assert {d["metadata"]["source"] for d in out} == {"synthetic"}  # the input's tag is kept

    pq = tmp_path / "pq"
    pq.mkdir()
    datasets.Dataset.from_dict({"text": texts[3:], "id": ["d", "e"]}).to_parquet(str(pq / "x.parquet"))
    _, out = run_filter(filter_config(tmp_path / "p", [str(pq)], input={"format": "parquet"}))
    assert sorted(d["text"] for d in out) == sorted(texts[3:])

    txt = tmp_path / "txt"
    txt.mkdir()
    (txt / "one.txt").write_text(texts[0])
    (txt / "bad.txt").write_bytes(b"\xff\xfe\xfa not utf-8")
    report, out = run_filter(filter_config(tmp_path / "t", [str(txt)], input={"format": "text"}))
    assert [d["text"] for d in out] == [texts[0]]
    assert stage_row(report, "read")["reasons"] == {"skipped_non_utf8": 1}
    assert stage_row(report, "read")["adds_up"]


def test_clean_stage_removes_boilerplate_and_short_docs(tmp_path, rng):
    body = prose(rng, 15)
    rows = [{"id": "page", "text": "Home | About | Contact\nWe use cookies to improve this site.\n"
             f"{body}\x07\r\nAll rights reserved."},
            {"id": "tiny", "text": "Too short to keep."}]
    write_jsonl(tmp_path / "raw" / "a.jsonl", rows)
    report, out = run_filter(filter_config(tmp_path, [str(tmp_path / "raw")], clean=True))
    assert [d["id"] for d in out] == ["page"]
    assert out[0]["text"] == body
    row = stage_row(report, "clean")
    assert row["docs_in"] == 2 and row["docs_out"] == 1 and row["bytes_out"] == len(body)
    assert row["counters"]["boilerplate_lines"] == 3 and row["adds_up"]


def test_a_truncated_gzip_file_is_one_line_naming_it(tmp_path, rng, capfd, monkeypatch):
    import gzip

    monkeypatch.chdir(tmp_path)
    raw = tmp_path / "raw"
    raw.mkdir()
    data = "".join(json.dumps({"id": f"d{i}", "text": prose(rng)}) + "\n" for i in range(40))
    whole = gzip.compress(data.encode())
    (raw / "a.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    cfg = filter_config(tmp_path, [str(raw / "*.jsonl.gz")])
    for workers in (1, 2):  # in this process, and from a spawned worker
        cfg.executor.tasks = cfg.executor.workers = workers
        err = cli_error(cfg, capfd)
        assert f"input file {raw / 'a.jsonl.gz'} is not readable JSONL" in err, err
        assert "truncated or corrupt" in err


@pytest.mark.parametrize("cut", ["mid-record", "mid-character"])
def test_a_jsonl_file_cut_off_mid_record_is_one_line_naming_it(tmp_path, rng, capfd, monkeypatch,
                                                                cut):
    monkeypatch.chdir(tmp_path)
    raw = tmp_path / "raw"
    raw.mkdir()
    last = json.dumps({"id": "last", "text": "café " + prose(rng)}, ensure_ascii=False).encode()
    with open(raw / "a.jsonl", "wb") as f:
        for i in range(40):
            f.write(json.dumps({"id": f"d{i}", "text": prose(rng)}).encode() + b"\n")
        f.write(last[:len(last) // 2] if cut == "mid-record" else last[:last.index(b"\xa9")])
    cfg = filter_config(tmp_path, [str(raw / "*.jsonl")])
    for workers in (1, 2):  # in this process, and from a spawned worker
        cfg.executor.tasks = cfg.executor.workers = workers
        err = cli_error(cfg, capfd)
        assert err == (f"loki filter: error: input file {raw / 'a.jsonl'} is not complete JSONL "
                       "(its last line, 41, has no newline and does not parse): it may be "
                       "truncated or corrupt; restore it, or take it out of input.paths"), err


def test_a_last_line_without_newline_that_parses_is_read(tmp_path, rng):
    rows = [{"id": f"d{i}", "text": prose(rng)} for i in range(3)]
    raw = tmp_path / "raw" / "a.jsonl"
    raw.parent.mkdir()
    raw.write_text(json.dumps(rows[0]) + "\n{not json\n"
                   + "\n".join(json.dumps(r) for r in rows[1:]))  # no newline at the end
    report, out = run_filter(filter_config(tmp_path, [str(raw)]))
    assert sorted(d["id"] for d in out) == ["d0", "d1", "d2"]
    assert stage_row(report, "read")["reasons"] == {"skipped_malformed_json": 1}


def test_a_damaged_parquet_file_is_one_line_naming_it(tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = tmp_path / "pq"
    raw.mkdir()
    (raw / "x.parquet").write_bytes(b"PAR1 this is not parquet at all PAR1")
    cfg = filter_config(tmp_path, [str(raw)], input={"format": "parquet"})
    err = cli_error(cfg, capfd)
    assert f"input file {raw / 'x.parquet'} is not a readable parquet file" in err, err
