"""A saved tokenizer's files: a damaged or cut-off build is refused in one line that names the
file and how to rebuild it, before tiktoken sees it."""

from __future__ import annotations

import json

import pytest

from loki.cli import main as loki_main
from loki.errors import LokiError
from loki.tokenizer import EOT, PAD, LokiTokenizer, pruned_tokenizer, select_vocabulary

REBUILD = "--overwrite true"


@pytest.fixture
def saved(tmp_path):
    """A small saved tokenizer: the 256 bytes, a few merges, <|endoftext|> and <|pad|>."""
    base = LokiTokenizer.from_tiktoken("cl100k_base")
    kept = select_vocabulary(base.ranks, [b" the", b"ing", b" and"], 300)
    pruned_tokenizer(base, kept, [EOT, PAD], name="small").save(tmp_path / "tok")
    return tmp_path / "tok"


def test_a_cut_off_json_is_named(saved):
    meta = saved / "tokenizer.json"
    meta.write_bytes(meta.read_bytes()[:200])
    for spec in (saved, meta):
        with pytest.raises(LokiError, match=f"{meta} is damaged, not JSON.*{REBUILD}"):
            LokiTokenizer.from_spec(spec)


@pytest.mark.parametrize("change", [{"vocab_hash": None}, {"special_tokens": {EOT: "x"}}])
def test_json_without_what_loading_needs_is_named(saved, change):
    meta = saved / "tokenizer.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), **change}))
    with pytest.raises(LokiError, match=f"{meta} is damaged: {next(iter(change))}.*{REBUILD}"):
        LokiTokenizer.load(saved)


def test_a_ranks_file_cut_mid_line_is_named(saved):
    ranks = saved / "tokenizer.tiktoken"
    data = ranks.read_bytes()
    # "... 299\n" cut to "... 2": a well-formed line whose rank another token has
    ranks.write_bytes(data[:-3])
    with pytest.raises(LokiError, match=f"{ranks} is cut off.*{REBUILD}"):
        LokiTokenizer.load(saved)
    ranks.write_bytes(data[:data.rindex(b"\n", 0, -1) + 1])  # cut at a line end
    with pytest.raises(LokiError, match=f"does not match its JSON.*cut off.*{REBUILD}"):
        LokiTokenizer.load(saved)


def test_repeated_ranks_and_tokens_are_named(saved):
    ranks = saved / "tokenizer.tiktoken"
    lines = ranks.read_text().splitlines(keepends=True)
    ranks.write_text("".join([*lines[:3], lines[1].split()[0] + " 3\n", *lines[4:]]))
    with pytest.raises(LokiError, match=f"{ranks}:4: token .* is listed twice"):
        LokiTokenizer.load(saved)
    ranks.write_text("".join([*lines[:3], lines[3].split()[0] + " 2\n", *lines[4:]]))
    with pytest.raises(LokiError, match=f"{ranks}:4: rank 2 was given on line 3 already"):
        LokiTokenizer.load(saved)
    ranks.write_text("".join(lines[1:]))
    with pytest.raises(LokiError, match="do not run 0..N-1"):
        LokiTokenizer.load(saved)


@pytest.mark.parametrize("argv", [["tokenizer", "stats", "--text", "[{text}]"],
                                  ["tokenize", "--inputs", "[{text}]", "--output", "{out}"]])
def test_commands_given_a_damaged_tokenizer_fail_in_one_line(saved, tmp_path, capsys, argv):
    (saved / "tokenizer.json").write_text("{")
    text = tmp_path / "t.jsonl"
    text.write_text(json.dumps({"text": "some text"}) + "\n")
    flag = "--tokenizers" if argv[0] == "tokenizer" else "--tokenizer"
    value = f"[{saved}]" if argv[0] == "tokenizer" else str(saved)
    with pytest.raises(SystemExit) as exit_info:
        loki_main([a.format(text=text, out=tmp_path / "out") for a in argv] + [flag, value])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1, err
    assert f"{saved / 'tokenizer.json'} is damaged" in err[0] and REBUILD in err[0]
