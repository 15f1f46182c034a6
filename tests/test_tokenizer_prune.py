"""``loki tokenizer prune`` as a library: usage counts (worker processes count what one process
counts), a corpus too small for the vocabulary, and a vocabulary too small for the bytes."""

from __future__ import annotations

import pytest

import loki.tokenizer_prune as tp
from loki.errors import LokiError
from loki.tokenizer import unreachable_tokens
from loki.tokenizer_corpus import corpus_files
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
