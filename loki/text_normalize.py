"""The one text normaliser for benchmark matching: index, corpus, synthetic and teacher text.

``match_words(text)`` returns the words an n-gram is made of, each with its character span in
the *original* text (decontamination cuts the original, not the normalised copy). A word is a run
of letters and digits after these steps, applied in order:

1. Unicode NFKC (full-width letters, ligatures, compatibility forms; NFD and NFC text alike);
2. removal of format characters (category Cf: soft hyphen, zero-width space/joiners, bidi
   marks, BOM), so an invisible character inside a word does not split it;
3. casefold (then NFKC again, as Unicode's NFKC_Casefold does);
4. optionally (``fold_confusables``, on by default): removal of nonspacing marks (stacked or
   added diacritics) and folding of Cyrillic and Greek letters that look like Latin ones;
5. the GPT-3 rule (Brown et al. 2020, appendix C): punctuation and whitespace only separate
   words, so punctuation, line breaks and spacing changes never change the words.

ASCII text (most web text) takes a fast path that gives the same words as the general one. The
module imports only the standard library, so ``loki.distill`` uses it without the filter pipeline.
"""

from __future__ import annotations

import functools
import re
import unicodedata

# bump when the words of any text change: a saved benchmark index records it and is rebuilt
VERSION = 1
_WORD = re.compile(r"[^\W_]+")
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")

# Letters drawn like Latin ones (after casefold, so lower case only), from Unicode's
# confusables.txt restricted to the Cyrillic and Greek blocks: the look-alikes used to slip text
# past exact-match filters. Uppercase forms casefold into these first.
CONFUSABLES = {
    # Cyrillic
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p",
    "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "һ": "h",
    "ԁ": "d", "ԛ": "q", "ԝ": "w", "ӏ": "l", "ɡ": "g", "ү": "y", "ѵ": "v", "ь": "b", "ӧ": "o",
    "ԍ": "g", "ꙇ": "i",
    # Greek
    "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p",
    "τ": "t", "υ": "u", "χ": "x", "ϳ": "j", "ζ": "z", "μ": "u", "ω": "w", "γ": "y",
}
_CONFUSABLE_TABLE = str.maketrans(CONFUSABLES)


@functools.lru_cache(maxsize=65536)
def _fold(cluster: str, fold_confusables: bool) -> str:
    """One base character with its marks -> normalised form (no word splitting yet)."""
    text = unicodedata.normalize("NFKC", cluster)
    text = "".join(c for c in text if unicodedata.category(c) != "Cf")
    text = unicodedata.normalize("NFKC", text.casefold())
    if fold_confusables:
        text = "".join(c for c in unicodedata.normalize("NFD", text)
                       if unicodedata.category(c) != "Mn")
        text = unicodedata.normalize("NFC", text).translate(_CONFUSABLE_TABLE)
    return text


@functools.lru_cache(maxsize=65536)
def _attaches(char: str) -> bool:
    """Whether ``char`` may combine with the character before it under NFKC (a mark, a Hangul
    vowel/final jamo, or a compatibility form of a combining character): such characters are
    normalised together with their base so that per-cluster NFKC equals whole-string NFKC."""
    if unicodedata.category(char).startswith("M"):
        return True
    first = unicodedata.normalize("NFKD", char)[:1]
    # Hangul vowel/final jamo (also as compatibility or half-width forms) compose with the
    # syllable before them; other compositions start with a combining character
    return bool(first) and ("\u1160" <= first <= "\u11ff" or unicodedata.combining(first) != 0)


def normalize_with_offsets(text: str, fold_confusables: bool = True
                           ) -> tuple[str, list[int], list[int]]:
    """(normalised text, start, end) where normalised character ``j`` came from original
    characters ``[start[j], end[j])``. ASCII runs are copied; only non-ASCII runs are folded."""
    parts: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    pos = 0

    def copy_ascii(a: int, b: int) -> None:
        if b > a:
            parts.append(text[a:b].lower())
            starts.extend(range(a, b))
            ends.extend(range(a + 1, b + 1))

    for run in _NON_ASCII.finditer(text):
        a, b = run.span()
        # a mark at the start of the run combines with the ASCII letter before it
        if a > pos and _attaches(text[a]):
            a -= 1
        copy_ascii(pos, a)
        i = a
        while i < b:
            j = i + 1
            while j < b and _attaches(text[j]):
                j += 1
            folded = _fold(text[i:j], fold_confusables)
            parts.append(folded)
            starts.extend([i] * len(folded))
            ends.extend([j] * len(folded))
            i = j
        pos = b
    copy_ascii(pos, len(text))
    return "".join(parts), starts, ends


def normalize(text: str, fold_confusables: bool = True) -> str:
    """The normalised text (for display and tests); matching uses ``match_words``."""
    return " ".join(w for w, _, _ in match_words(text, fold_confusables))


def match_words(text: str, fold_confusables: bool = True) -> list[tuple[str, int, int]]:
    """Normalised words with their ``[start, end)`` character spans in ``text``."""
    if text.isascii():
        return [(m.group(0).lower(), m.start(), m.end()) for m in _WORD.finditer(text)]
    norm, starts, ends = normalize_with_offsets(text, fold_confusables)
    return [(m.group(0), starts[m.start()], ends[m.end() - 1]) for m in _WORD.finditer(norm)]
