"""The exported ``tokenizer.json`` gives LokiTokenizer's ids on any text, specials included."""

from __future__ import annotations

import random

import pytest

from loki.export.hf_tokenizer import onig_pattern, to_tokenizers
from loki.tokenizer import CL100K_PAT_STR, EOT, LokiTokenizer

PIECES = [
    # prose, contractions in both cases, numbers of every length
    "The quick brown fox", " jumps over", "the lazy dog.", "It's", " they'RE", " I'll", " we'VE",
    "don't", "1", "12", "123", "1234567", " 3.14159", "1,000,000", "2024-11-30",
    # whitespace runs, tabs, CR/LF, trailing spaces, Unicode spaces
    " ", "  ", "    ", "\t", "\t\t", "\n", "\n\n", "\r\n", " \n", "  \n  ", "\u00a0", "\u3000",
    "\u2028", "\u0085", "\u200b", "\u2003\u2003",
    # code
    "def f(x):\n    return x ** 2\n", "for (int i = 0; i < n; ++i) { a[i] += b[i]; }",
    "SELECT * FROM t WHERE id = 3;", "<div class=\"a\">&nbsp;</div>", "#!/bin/bash\necho $HOME",
    "x = {'a': [1, 2], \"b\": None}", "// comment", "/* block */", "λx.x", "==>", "!==", "...",
    # Unicode: accents, combining marks, CJK, Cyrillic, Arabic, Devanagari, emoji, ZWJ sequences
    "naïve café", "e\u0301", "Ångström", "東京タワー", "中文字符", "한국어", "Привет мир",
    "مرحبا", "हिन्दी", "🙂", "👩‍💻", "🇫🇷", "ǅ", "ﬁ", "Ⅻ", "½", "٣٤٥", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    # the specials, also glued to text
    EOT, "<|pad|>", "<|fim_prefix|>", "<|endofprompt|>", "<|endoftext", "|>",
]


def varied_strings(n: int, seed: int = 0) -> list[str]:
    """``n`` strings of 1-12 pieces joined with nothing, a space or a newline run."""
    rng = random.Random(seed)
    glue = ["", "", " ", "\n", "  ", "\n\n"]
    out = ["", " ", "\n", "a", EOT, EOT + EOT, "  \n", "a  \nb", "x \n "]
    while len(out) < n:
        parts = rng.choices(PIECES, k=rng.randint(1, 12))
        out.append("".join(p + rng.choice(glue) for p in parts))
    return out


def test_oniguruma_pattern_drops_possessives_and_anchors_at_the_end():
    assert onig_pattern(CL100K_PAT_STR) == (
        r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
        r"""|\s+\z|\s*[\r\n]|\s+(?!\S)|\s""")


@pytest.fixture(scope="module")
def base():
    return LokiTokenizer.from_tiktoken("cl100k_base")


@pytest.fixture(scope="module")
def converted(pruned, base):
    """Each tokenizer converted once (cl100k_base's 100k merges take seconds)."""
    return {"pruned": (pruned, to_tokenizers(pruned)), "cl100k_base": (base, to_tokenizers(base))}


@pytest.mark.parametrize("which", ["pruned", "cl100k_base"])
def test_ids_equal_on_1000_varied_strings(which, converted):
    tok, hf = converted[which]
    strings = varied_strings(1000)
    assert sum(EOT in s for s in strings) > 50 and sum("\u3000" in s for s in strings) > 20
    got = [e.ids for e in hf.encode_batch(strings, add_special_tokens=False)]
    want = [tok.encode(s, allowed_special="all") for s in strings]
    bad = [(s, g, w) for s, g, w in zip(strings, got, want) if g != w]
    assert not bad, bad[:3]
    assert all(hf.decode(w, skip_special_tokens=False) == tok.decode(w) for w in want[:200])
    # special-token text in documents as plain text, as training encodes it
    hf.encode_special_tokens = True
    try:
        plain = [e.ids for e in hf.encode_batch(strings, add_special_tokens=False)]
    finally:
        hf.encode_special_tokens = False
    assert plain == [tok.encode(s) for s in strings]


def test_specials_keep_their_ids_across_cl100k_holes(converted):
    base, hf = converted["cl100k_base"]  # cl100k leaves 100256 and 100261-100275 unused
    assert {s: hf.token_to_id(s) for s in base.specials} == base.specials


def test_saved_tokenizer_loads_with_autotokenizer(exported, pruned):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(exported, trust_remote_code=True)
    text = "def wrap(text, width=70):" + EOT
    assert hf(text)["input_ids"] == pruned.encode(text, allowed_special="all")  # no BOS added
    assert (hf.eos_token_id, hf.pad_token_id) == (pruned.eot_id, pruned.pad_id)
