"""``loki tokenizer stats``: no figures from empty text, and its numbers checked by name."""

from __future__ import annotations

import json

import pytest

from loki.errors import LokiError
from loki.tokenizer_stats import stats


@pytest.fixture
def text(tmp_path):
    (tmp_path / "t.jsonl").write_text(json.dumps({"text": "some words to encode"}) + "\n")
    return str(tmp_path / "t.jsonl")


def test_empty_text_gives_no_figures(tmp_path, capsys):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "blank.jsonl").write_text(json.dumps({"text": ""}) + "\n")
    for name, found in (("empty.jsonl", "no documents"),
                        ("blank.jsonl", "its 1 documents are all empty")):
        with pytest.raises(LokiError, match=f"no text read from {tmp_path / name}: {found}"):
            stats(["cl100k_base"], [str(tmp_path / name)], repeat=1)
    assert "bytes/token" not in capsys.readouterr().out


@pytest.mark.parametrize("setting", ["max_bytes", "repeat", "num_threads"])
def test_counts_below_one_are_refused_by_name(text, setting):
    with pytest.raises(LokiError, match=f"{setting} must be >= 1, got 0"):
        stats(["cl100k_base"], [text], **{setting: 0})


def test_a_missing_tokenizer_fails_before_the_text_is_read(tmp_path, monkeypatch):
    import loki.tokenizer_stats as ts

    def no_read(*a, **k):
        raise AssertionError("the tokenizers load before the text is read")

    monkeypatch.setattr(ts, "read_texts", no_read)
    with pytest.raises(LokiError, match="no saved tokenizer"):
        stats([str(tmp_path / "nope")], ["t.jsonl"])


def test_stats_on_text(text, capsys):
    (row,) = stats(["cl100k_base"], [text], repeat=1, num_threads=2)
    assert row["bytes"] == len(b"some words to encode") and row["tokens"] == 4
    assert "cl100k_base" in capsys.readouterr().out
