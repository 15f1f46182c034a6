"""The benchmark-matching normaliser, by property: a text and its variants give the same words."""

from __future__ import annotations

import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from loki.text_normalize import CONFUSABLES, match_words, normalize

# any Unicode text but surrogates (not encodable, never in a decoded document)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=80)
LATIN_WORDS = st.lists(st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=9),
                       min_size=1, max_size=12)
FORMAT_CHARS = ["\u00ad", "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u200e", "\u202a"]
_LATIN_TO_LOOKALIKE = {v: k for k, v in CONFUSABLES.items() if k.isalpha()}


def words(text: str, fold: bool = True) -> list[str]:
    return [w for w, _, _ in match_words(text, fold)]


@settings(max_examples=150, deadline=None, derandomize=True)
@given(TEXT)
def test_unicode_normal_forms_normalise_alike(text):
    for form in ("NFC", "NFD", "NFKC", "NFKD"):
        assert words(unicodedata.normalize(form, text)) == words(text)
        assert words(unicodedata.normalize(form, text), False) == words(text, False)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(TEXT)
def test_spans_point_into_the_original_text(text):
    prev_start = 0
    for word, start, end in match_words(text):
        assert 0 <= start < end <= len(text) and start >= prev_start
        # the span alone holds the word (one character may expand to several: "¼" -> 1 4)
        assert word in normalize(text[start:end]).split()
        prev_start = start


@settings(max_examples=100, deadline=None, derandomize=True)
@given(LATIN_WORDS, st.data())
def test_variants_of_a_text_normalise_alike(ws, data):
    text = " ".join(ws)
    # case, punctuation, whitespace and line breaks
    seps = data.draw(st.lists(st.sampled_from([" ", "  ", "\n", ", ", " - ", "\t", ".\n\n", " (",
                                               "\u00a0", "\u3000", "\u2014"]),
                              min_size=len(ws), max_size=len(ws)))
    variant = "".join(w.upper() if i % 2 else w.capitalize() for i, w in enumerate(ws))
    variant = "".join(w + s for w, s in zip(
        [w.upper() if i % 2 else w.capitalize() for i, w in enumerate(ws)], seps))
    assert words(variant) == words(text) == ws
    # full-width forms
    full = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else "\u3000" for c in text)
    assert words(full) == ws
    # format characters inside words
    fmt = data.draw(st.sampled_from(FORMAT_CHARS))
    assert words("".join(c + fmt for c in text)) == ws
    # Cyrillic and Greek look-alikes: caught with folding, different words without
    swapped = "".join(_LATIN_TO_LOOKALIKE.get(c, c) for c in text)
    assert words(swapped) == ws
    if swapped != text:
        assert words(swapped, fold=False) != ws
    # added diacritics (combining marks) are look-alikes too
    marked = "".join(c + "\u0301" if c.isalpha() else c for c in text)
    assert words(marked) == ws


def test_examples():
    assert normalize("Ｔｈｅ ｆｉｒｓｔ") == "the first"
    assert normalize("ﬁnal soft\u00adhyphen zero\u200bwidth") == "final softhyphen zerowidth"
    assert normalize("Ѕрасе Ехрlоrаtіоn", fold_confusables=False) != "space exploration"
    assert normalize("Ѕрасе Ехрlоrаtіоn") == "space exploration"
    assert normalize("Straße İstanbul café") == "strasse istanbul cafe"
    assert normalize("“Quoted” — it’s 3.14!") == "quoted it s 3 14"
    assert normalize("\u3131\u314f \uffa1\uffc2") == normalize("\uac00 \uac00")  # jamo forms
