"""Factual-statement pruning on hand-written sentences."""

from __future__ import annotations

import pytest

from loki.filtering.factual import factual_rule, prune_facts

REMOVED = [
    "Alan Turing was born on 23 June 1912.",
    "He died on June 7, 1954 in Wilmslow.",
    "The company was founded in 1998 by two students.",
    "Unemployment rose to 7.5% during the recession.",
    "The bridge is 1.2 km long.",
    "The city had a population of 3,400 people.",
    "The project cost $4 million.",
]
KEPT = [
    "Alan Turing designed the Automatic Computing Engine.",
    "Photosynthesis converts light energy into chemical energy.",
    "There are two kinds of cells in this tissue.",
    "Recursion lets a function call itself on a smaller problem.",
    "The treaty changed how the two countries traded with each other.",
]


@pytest.mark.parametrize("sentence", REMOVED)
def test_precise_facts_removed_at_paper_strength(sentence):
    assert factual_rule(sentence, 1.0) is not None
    assert factual_rule(sentence, 0.5) is not None


@pytest.mark.parametrize("sentence", KEPT)
def test_conceptual_statements_kept_at_every_strength(sentence):
    assert factual_rule(sentence, 1.0) is None


def test_strength_zero_is_off_and_tiers_grow_with_strength():
    text = " ".join(REMOVED + KEPT + ["The war lasted from 1914 to 1918.", "It sold 250 copies."])
    assert prune_facts(text, 0.0) == (text, [])
    n = [len(prune_facts(text, s)[1]) for s in (0.1, 0.5, 0.8, 1.0)]
    assert n == sorted(n) and n[0] >= 2 and n[-1] == len(REMOVED) + 2
    assert factual_rule("The war lasted from 1914 to 1918.", 0.5) is None
    assert factual_rule("The war lasted from 1914 to 1918.", 0.8) == "dated_event"


def test_pruned_text_keeps_conceptual_sentences_verbatim():
    text = ("Alan Turing was born on 23 June 1912. Alan Turing designed the Automatic Computing "
            "Engine. He died in 1954.\nPhotosynthesis converts light energy into chemical energy.")
    out, removed = prune_facts(text, 1.0)
    assert out == ("Alan Turing designed the Automatic Computing Engine.\n"
                   "Photosynthesis converts light energy into chemical energy.")
    assert [r for r, _ in removed] == ["full_date", "life_event"]
