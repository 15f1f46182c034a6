"""``loki tokenizer prune`` as a library: usage counts (worker processes count what one process
counts), a corpus too small for the vocabulary, and a vocabulary too small for the bytes."""

from __future__ import annotations

import json

import pytest

import loki.tokenizer_prune as tp
from loki.errors import LokiError
from loki.tokenizer import unreachable_tokens
from loki.tokenizer_corpus import corpus_files, is_held_out
from tests.helpers.corpus import jsonl_corpus


@pytest.mark.slow
def test_parallel_counts_equal_serial(tmp_path):
    src = jsonl_corpus(tmp_path / "corpus")
    files = corpus_files([str(src)])
    serial = tp.PruneConfig(corpus=[str(src)], workers=1, batch_bytes=20_000)
    parallel = tp.PruneConfig(corpus=[str(src)], workers=2, batch_bytes=20_000)
    a = tp.count_usage(serial, files, 100277)
    b = tp.count_usage(parallel, files, 100277)
    assert a.bytes == b.bytes > 0 and (a.counts == b.counts).all()


def test_corpus_too_small(tmp_path):
    (tmp_path / "c.txt").write_text("the cat sat on the mat. " * 50)
    cfg = tp.PruneConfig(corpus=[str(tmp_path / "c.txt")], output=str(tmp_path / "o"),
                         vocab_size=1000, workers=1, held_out_fraction=0.0)
    with pytest.raises(LokiError, match="corpus too small to rank 1000"):
        tp.prune(cfg)
    cfg.allow_unranked_fill = True
    tok = tp.prune(cfg)
    assert tok.vocab_size == 1000 and unreachable_tokens(tok.ranks) == []
    assert len(tok.encode("the cat sat on the mat.")) <= 7


def test_vocab_size_must_leave_room_for_the_bytes(tmp_path):
    (tmp_path / "c.txt").write_text("text")
    with pytest.raises(LokiError, match="vocab_size"):
        tp.prune(tp.PruneConfig(corpus=[str(tmp_path / "c.txt")], vocab_size=100))


def _never_counted(monkeypatch):
    def no_count(*a, **k):
        raise AssertionError("settings are checked before the corpus is counted")

    monkeypatch.setattr(tp, "count_usage", no_count)


@pytest.mark.parametrize("fill", [False, True])
def test_vocab_size_above_the_base_names_the_maximum(tmp_path, monkeypatch, fill):
    _never_counted(monkeypatch)
    (tmp_path / "c.txt").write_text("text")
    cfg = tp.PruneConfig(corpus=[str(tmp_path / "c.txt")], output=str(tmp_path / "o"),
                         vocab_size=200_000, allow_unranked_fill=fill)
    with pytest.raises(LokiError, match="vocab_size 200000 is above the maximum 100258 for "
                                        r"cl100k_base \(its 100256 mergeable tokens \+ 2 special"):
        tp.prune(cfg)
    assert not (tmp_path / "o").exists()


def test_the_largest_vocab_size_is_the_whole_base(tmp_path):
    (tmp_path / "c.txt").write_text("the cat sat on the mat. " * 50)
    tok = tp.prune(tp.PruneConfig(corpus=[str(tmp_path / "c.txt")], output=str(tmp_path / "o"),
                                  vocab_size=100_258, allow_unranked_fill=True, workers=1))
    assert len(tok.ranks) == 100_256


def test_exclusions_that_leave_too_few_tokens_are_named(tmp_path, monkeypatch):
    (tmp_path / "c.txt").write_text("the cat sat on the mat. " * 50)
    cfg = tp.PruneConfig(corpus=[str(tmp_path / "c.txt")], output=str(tmp_path / "o"),
                         vocab_size=100_258, allow_unranked_fill=True, workers=1,
                         exclude_tokens=[" t"])
    with pytest.raises(LokiError, match="exclude_tokens .' t'. leave .* fewer than the 100256"):
        tp.prune(cfg)
    _never_counted(monkeypatch)
    cfg.exclude_tokens = ["not-a-single-token"]
    with pytest.raises(LokiError, match="are not cl100k_base tokens"):
        tp.prune(cfg)


@pytest.mark.parametrize(("setting", "message"), [
    ({"held_out_fraction": 1.5}, "held_out_fraction 1.5 is not a share between 0 and 1"),
    ({"held_out_fraction": -0.1}, "held_out_fraction -0.1 is not a share"),
    ({"workers": 0}, "workers must be >= 1"),
    ({"batch_bytes": 0}, "batch_bytes must be >= 1"),
    ({"sample_bytes": -1}, "sample_bytes must be >= 0"),
    ({"special_tokens": ["<|pad|>"]}, "special_tokens must include <|endoftext|>"),
])
def test_bad_settings_are_refused_by_name(setting, message):
    with pytest.raises(LokiError, match=message.replace("|", r"\|")):
        tp.PruneConfig(corpus=["c.txt"], **setting)


def test_the_report_counts_every_held_out_document(tmp_path, capsys):
    src = jsonl_corpus(tmp_path / "corpus")
    texts = [json.loads(line)["text"] for f in sorted(src.glob("*.jsonl"))
             for line in f.read_text().splitlines()]
    held = [t for t in texts if t and is_held_out(t, 0.5)]
    kept_for_eval = held[:1]
    cfg = tp.PruneConfig(corpus=[str(src)], output=str(tmp_path / "o"), vocab_size=300,
                         workers=1, held_out_fraction=0.5,
                         held_out_max_bytes=len(held[0].encode()))
    tp.prune(cfg)
    report = json.loads((tmp_path / "o" / "prune_report.json").read_text())
    assert 0 < len(kept_for_eval) < len(held) < len(texts)
    assert report["held_out_docs"] == len(held)
    assert report["held_out_bytes"] == sum(len(t.encode()) for t in held)
    assert report["held_out_kept_docs"] == 1
    assert report["corpus_docs"] + len(held) == sum(1 for t in texts if t)
    out = capsys.readouterr().out
    assert f"| held-out (not counted) | {report['held_out_bytes']:,} bytes, {len(held):,} " in out
    assert "| held-out kept for bytes/token | " in out


@pytest.mark.parametrize("output", ["afile", "afile/sub", "/proc/tok"])
def test_an_output_that_cannot_be_written_is_refused_before_counting(tmp_path, monkeypatch,
                                                                      output):
    _never_counted(monkeypatch)
    (tmp_path / "c.txt").write_text("text")
    (tmp_path / "afile").write_text("not a folder")
    out = output if output.startswith("/") else str(tmp_path / output)
    cfg = tp.PruneConfig(corpus=[str(tmp_path / "c.txt")], output=out, vocab_size=300)
    with pytest.raises(LokiError, match="is a file, not a folder|is not writable"):
        tp.prune(cfg)
    assert (tmp_path / "afile").read_text() == "not a folder"


def test_empty_documents_are_counted_and_reported(tmp_path, capsys):
    src = jsonl_corpus(tmp_path / "corpus")
    empty = sum(json.loads(line)["text"] == "" for f in src.glob("*.jsonl")
                for line in f.read_text().splitlines())
    (src / "empty.jsonl").write_text('{"text": ""}\n' * 3)
    tp.prune(tp.PruneConfig(corpus=[str(src)], output=str(tmp_path / "o"), vocab_size=300,
                            workers=1, held_out_fraction=0.0))
    report = json.loads((tmp_path / "o" / "prune_report.json").read_text())
    assert report["empty_docs"] == empty + 3
    assert f"| empty documents (no text to count) | {empty + 3} |" in capsys.readouterr().out
