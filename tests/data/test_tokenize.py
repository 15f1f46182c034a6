"""``loki tokenize``: filter output -> per-source token shards; corpus mode of the DataModule."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from loki.cli import main as loki
from loki.data.datamodule import LokiDataModule
from loki.data.shards import TokenShardSet
from loki.data.tokenize import main
from loki.errors import LokiError
from loki.tokenizer import LokiTokenizer

DOCS = [("web", "The quick brown fox jumps over the lazy dog. " * 3),
        ("synthetic", "A cat is an animal. A dog is an animal too."),
        ("web", "Whether 'tis nobler in the mind to suffer the slings and arrows.")]


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # runs/logs/tokenize.log goes here
    monkeypatch.delenv("LOKI_LOG_DIR")  # (the tests' own place for library logs)


def _filter_output(folder):
    folder.mkdir()
    with gzip.open(folder / "00000.jsonl.gz", "wt") as f:
        for k, (source, text) in enumerate(DOCS):
            f.write(json.dumps({"id": str(k), "text": text, "metadata": {"source": source}}) + "\n")
    return folder


def test_tokenize_writes_one_shard_set_per_source(tmp_path):
    inputs = _filter_output(tmp_path / "filtered")
    config = tmp_path / "tok.yaml"
    config.write_text(f"inputs: [{inputs}/*.jsonl.gz]\noutput: {tmp_path / 'shards'}\n"
                      "tokenizer: cl100k_base\n")
    main(["--config", str(config)])
    tok = LokiTokenizer.from_spec("cl100k_base")
    web = TokenShardSet.open(str(tmp_path / "shards" / "web"))
    assert web.source == "web" and web.vocab_hash == tok.vocab_hash
    assert web.dtype == np.uint32 and web.manifest["num_documents"] == 2  # cl100k > 65,536 ids
    ids = web.reader(0).read(0, web.shard_tokens[0]).tolist()
    expected = tok.encode(DOCS[0][1]) + [tok.eot_id] + tok.encode(DOCS[2][1]) + [tok.eot_id]
    assert ids == expected
    web.check("full")
    synthetic = TokenShardSet.open(str(tmp_path / "shards" / "synthetic"))
    assert synthetic.manifest["num_tokens"] == len(tok.encode(DOCS[1][1])) + 1


def test_unreadable_input_names_the_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{not json\n')
    with pytest.raises(LokiError, match="bad.jsonl"):
        main(["--inputs", f"[{bad}]", "--output", str(tmp_path / "out")])
    with pytest.raises(LokiError, match="input not found: .*missing.jsonl"):
        main(["--inputs", f"[{tmp_path / 'missing.jsonl'}]", "--output", str(tmp_path / "o")])


def test_corpus_mode_tokenizes_once_into_cached_shards(tmp_path):
    text = tmp_path / "book.txt"
    text.write_text("It was the best of times, it was the worst of times. " * 200)
    dm = LokiDataModule(corpus=[str(text)], block_size=32, micro_batch_size=2,
                        cache_dir=str(tmp_path / "cache"), val_fraction=0.1)
    assert dm.vocab_size == 100277 and dm.tokenizer_spec == "cl100k_base"
    dm.setup("fit")
    batch = dm.on_before_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert batch["input_ids"].shape == (1, 2, 32)
    window = LokiTokenizer.from_spec("cl100k_base").decode(batch["input_ids"][0, 0].tolist())
    assert len(window) > 50 and window in text.read_text()
    folder = next((tmp_path / "cache").glob("corpus-*"))
    mtime = (folder / "web" / "manifest.json").stat().st_mtime_ns
    again = LokiDataModule(corpus=[str(text)], block_size=32, micro_batch_size=2,
                           cache_dir=str(tmp_path / "cache"))
    again.setup("fit")
    assert (folder / "web" / "manifest.json").stat().st_mtime_ns == mtime  # not redone
    assert len(list(dm.val_dataloader())) > 0


def _loki_tokenize(argv: list[str], capsys) -> str:
    """``loki tokenize argv`` expected to fail: its one error line."""
    with pytest.raises(SystemExit) as exit_:
        loki(["tokenize", *argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("loki tokenize: error: "), err
    return err


@pytest.mark.parametrize("tag", ["wiki/en", "..", "../escaped", ".hidden", "a b", "x" * 101, 7,
                                 "summary.json"])
def test_a_source_tag_that_is_no_folder_name_is_refused_naming_it(tmp_path, capsys, tag):
    bad = tmp_path / "tagged.jsonl"
    bad.write_text(json.dumps({"text": "fine", "metadata": {"source": "web"}}) + "\n"
                   + json.dumps({"text": "hello", "metadata": {"source": tag}}) + "\n")
    err = _loki_tokenize(["--inputs", f"[{bad}]", "--output", str(tmp_path / "out")], capsys)
    assert "tagged.jsonl" in err and f"source tag {tag!r}" in err
    assert not (tmp_path / "escaped").exists() and not list(tmp_path.glob("out/*-00000.*"))
    err = _loki_tokenize(["--inputs", f"[{bad}]", "--output", str(tmp_path / "out"),
                          "--default_source", "a/b"], capsys)
    assert "default_source: source tag 'a/b'" in err


def test_tags_named_like_the_staging_folders_are_ordinary_sources(tmp_path):
    from loki.data.tokenize import tokenize_files

    tags = ["parts", "logs", "sources", "old", "summary", "error.txt", "web.v2"]
    files = []
    for f in range(2):
        files.append(tmp_path / f"{f}.jsonl")
        files[-1].write_text("".join(json.dumps({"text": f"document {f} of {t}",
                                                 "metadata": {"source": t}}) + "\n" for t in tags))
    out = tmp_path / "shards"
    tokenize_files(files, out, tasks=2, log=lambda m: None)
    assert sorted(p.name for p in out.iterdir()) == sorted(tags)
    for tag in tags:  # each holds its own set and nothing of the staging's
        shards = TokenShardSet.open(str(out / tag))
        shards.check("full")
        assert shards.manifest["num_documents"] == 2
        names = [n for s in shards.manifest["shards"] for n in (s["tokens"], s["docs"])]
        assert sorted(p.name for p in (out / tag).iterdir()) == sorted(["manifest.json", *names])


def test_a_record_that_is_no_object_is_named_by_its_line_with_workers(tmp_path, capsys):
    good = tmp_path / "a.jsonl"
    good.write_text("".join(json.dumps({"text": f"document {k}"}) + "\n" for k in range(50)))
    bad = tmp_path / "b.jsonl"
    bad.write_text(json.dumps({"text": "fine"}) + "\n\n" + '["a", "b"]\n')
    err = _loki_tokenize(["--inputs", f"[{good}, {bad}]", "--output", str(tmp_path / "out"),
                          "--tasks", "2", "--workers", "2"], capsys)
    assert err.endswith(f"{bad}:3: expected an object with a 'text' string, not an array")


def test_a_file_named_twice_is_tokenized_once(tmp_path, capfd):
    multi = tmp_path / "multi"
    multi.mkdir()
    for k in (1, 2):
        (multi / f"p{k}.jsonl").write_text(json.dumps({"text": f"part {k}"}) + "\n")
    main(["--inputs", f"[{multi}, {multi}/p1.jsonl]", "--output", str(tmp_path / "out")])
    manifest = TokenShardSet.open(str(tmp_path / "out" / "web")).manifest
    assert manifest["num_documents"] == 2
    assert manifest["inputs"] == [str(multi / "p1.jsonl"), str(multi / "p2.jsonl")]
    out = capfd.readouterr().out
    assert f"1 input file(s) named more than once, read once: {multi}/p1.jsonl" in out


def test_the_console_gets_a_summary_and_datatrove_goes_to_the_log(tmp_path, capfd):
    inputs = _filter_output(tmp_path / "filtered")
    for tasks in ("1", "2"):  # the second run logs into a new console, the first one closed
        loki(["tokenize", "--inputs", f"[{inputs}]", "--output", "shards", "--tasks", tasks,
              "--workers", tasks])
        out, err = capfd.readouterr()
    tokens = [len(LokiTokenizer.from_spec("cl100k_base").encode(t)) + 1 for _, t in DOCS]
    assert out.splitlines()[:2] == [
        f"loki tokenize: synthetic: 1 document, {tokens[1]} tokens in 1 shard -> shards/synthetic",
        f"loki tokenize: web: 2 documents, {tokens[0] + tokens[2]} tokens in 1 shard -> shards/web"]
    assert out.splitlines()[2].startswith(f"loki tokenize: {sum(tokens)} tokens from 1 file in ")
    assert out.splitlines()[3:] == [
        "library logs and warnings: runs/logs/tokenize.log (--verbose shows them here)"]
    assert err == ""
    log = (tmp_path / "runs" / "logs" / "tokenize.log").read_text()
    assert "Processing done for rank=0" in log and "Stats: All 2 tasks" in log
    assert "Logging error" not in log  # (a sink left on the closed log of an earlier run)
    assert "/task]" in log and "/doc]" not in log  # the figures are per task
    loki(["tokenize", "--inputs", f"[{inputs}]", "--output", "shards", "--verbose", "true"])
    out, err = capfd.readouterr()
    assert "Processing done for rank=0" in err and "library logs" not in out


def test_in_a_verbose_demo_libraries_stay_on_the_terminal(tmp_path, capfd):
    from loki.console import muted

    with muted():  # what a stage of `loki demo --verbose true` runs in
        main(["--inputs", f"[{_filter_output(tmp_path / 'filtered')}]", "--output", "shards"])
    out, err = capfd.readouterr()
    assert "Processing done for rank=0" in err and "library logs" not in out
    assert not (tmp_path / "runs").exists()


def test_help_is_plain_text(capsys):
    with pytest.raises(SystemExit):
        loki(["tokenize", "--help"])
    out = capsys.readouterr().out
    assert "loki tokenize: filtered documents -> token shards" in out
    assert "``" not in out and "`" not in out and "--verbose" in out


def test_a_source_folder_holding_other_files_is_refused_not_emptied(tmp_path, capsys):
    inputs = _filter_output(tmp_path / "filtered")
    main(["--inputs", f"[{inputs}]", "--output", "shards"])
    before = sorted(p.name for p in (tmp_path / "shards" / "web").iterdir())
    (tmp_path / "shards" / "web" / "mine.txt").write_text("my notes")
    capsys.readouterr()  # the first run's lines
    err = _loki_tokenize(["--inputs", f"[{inputs}]", "--output", "shards"], capsys)
    assert "shards/web would be replaced" in err and "mine.txt" in err, err
    assert (tmp_path / "shards" / "web" / "mine.txt").read_text() == "my notes"
    assert sorted(p.name for p in (tmp_path / "shards" / "web").iterdir()) == sorted(
        [*before, "mine.txt"])
    assert not list((tmp_path / "shards").glob(".tokenize-*"))
