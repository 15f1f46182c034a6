"""A ``LokiTokenizer`` as a Hugging Face ``tokenizers`` byte-level BPE (``tokenizer.json``).

transformers' own ``TikTokenConverter`` does the conversion (vocabulary through GPT-2's
byte-to-unicode map, merges derived from the ranks: every split of a token into two tokens,
ordered by the rank of the token they make, and ``ignore_merges`` so that a regex piece that is
itself a token maps to it directly, as tiktoken does). Here it is given the pruned ranks in memory
and the tokenizer's own pre-tokenizer regex, rewritten for the Oniguruma engine that ``tokenizers``
uses (see ``onig_pattern``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from loki._optional import require
from loki.tokenizer import EOT, PAD, LokiTokenizer


def onig_pattern(pat_str: str) -> str:
    """tiktoken's regex (Rust ``fancy-regex``) in a form Oniguruma reads the same way.

    - Possessive quantifiers (``?+ ++ *+ {1,3}+``) become greedy ones: in every place cl100k uses
      them, backtracking into the quantifier cannot produce another match, and Oniguruma's Ruby
      syntax reads ``{1,3}+`` as "one or more of {1,3}" (unbounded digit runs).
    - ``$`` becomes ``\\z``: in Rust ``$`` is the end of the text, in Ruby syntax the end of any
      line (``"a  \\nb"`` would otherwise split its spaces off the newline).
    """
    out = re.sub(r"(\{\d+(?:,\d*)?\})\+", r"\1", pat_str)  # {1,3}+ -> {1,3}, not \p{L}+ -> \p{L}
    for possessive, greedy in (("?+", "?"), ("++", "+"), ("*+", "*")):
        out = out.replace(possessive, greedy)
    return out.replace("$", r"\z")


def to_tokenizers(tok: LokiTokenizer) -> Any:
    """A ``tokenizers.Tokenizer`` giving ``tok``'s ids on any text, specials included (matched in
    text as ``tok.encode(text, allowed_special="all")`` does)."""
    require("tokenizers", "eval")
    conv = require("transformers.convert_slow_tokenizer", "eval")

    class _RanksConverter(conv.TikTokenConverter):
        @staticmethod
        def load_tiktoken_bpe(ranks: dict[bytes, int]) -> dict[bytes, int]:
            return ranks  # the pruned ranks in memory instead of a .tiktoken file

        def extract_vocab_merges_from_model(self, ranks):
            vocab, merges = super().extract_vocab_merges_from_model(ranks)
            # Specials at their own ids: cl100k leaves holes below and between them (100256,
            # 100261-100275), which ids handed out by add_special_tokens would close.
            return {**vocab, **tok.specials}, merges

    specials = sorted(tok.specials, key=tok.specials.__getitem__)
    converted = _RanksConverter(vocab_file=tok.ranks, pattern=onig_pattern(tok.pat_str)).converted()
    added = require("tokenizers", "eval").AddedToken
    converted.add_special_tokens([added(s, normalized=False, special=True) for s in specials])
    got = {s: converted.token_to_id(s) for s in specials}
    if got != tok.specials:
        raise ValueError(f"special token ids moved in conversion: {got} != {tok.specials}")
    return converted


def to_transformers(tok: LokiTokenizer) -> Any:
    """The converted tokenizer wrapped as a ``PreTrainedTokenizerFast`` (what ``AutoTokenizer``
    loads): end-of-text as eos, pad as pad (eos when there is no ``<|pad|>``), no BOS added, as
    Loki trains."""
    transformers = require("transformers", "eval")
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=to_tokenizers(tok), eos_token=EOT,
        pad_token=PAD if PAD in tok.specials else EOT, clean_up_tokenization_spaces=False)


def save_tokenizer(tok: LokiTokenizer, folder: str | Path) -> None:
    """``tokenizer.json`` and ``tokenizer_config.json`` into ``folder``."""
    to_transformers(tok).save_pretrained(folder)
    # transformers 5 records its internal class name (TokenizersBackend), which 4.x cannot
    # resolve; PreTrainedTokenizerFast is the name both read as "this tokenizer.json as is"
    path = Path(folder) / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(config, indent=2) + "\n")
