"""Factual-statement pruning: drop sentences that state precise dates, numbers and statistics.

The paper removed "Alan Turing was born on 23 June 1912" and kept "Alan Turing designed the
Automatic Computing Engine", and blames this stage for its low TruthfulQA score, so ``strength``
(0..1) lets users study the trade-off. A sentence is removed when any *active* rule matches; a rule
is active when ``strength >= its tier``:

tier 0.01 (precise dates and life events)
  - full dates: ``23 June 1912``, ``June 23, 1912``, ``1912-06-23``, ``23/06/1912``
  - ``born|died|founded|established|married ... in/on <year or date>``
tier 0.34 (statistics)
  - percentages: ``45%``, ``45 percent``, ``45 per cent``
  - numbers with units or money: ``1.2 km``, ``120 kg``, ``$4 million``, ``3,000 people``,
    ``5 million``
  - month + year: ``in March 1936``
tier 0.67 (dated events)
  - a year as a date: ``in 1936``, ``(1936)``, ``by 1950``, ``1914-1918``, ``the 1920s``
tier 1.0 (any precise quantity)
  - any number with three or more digits, or a decimal number

Sentences are split on ``.!?`` followed by whitespace and a capital/quote/bracket; the text
between kept sentences (their original whitespace) is preserved.
"""

from __future__ import annotations

import re

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.writers.disk_base import DiskWriter

from loki.filtering.steps import exclusions

_MONTH = (r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|"
          r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)")
_YEAR = r"(?:1[0-9]{3}|20[0-9]{2})"
_UNITS = (r"(?:%|percent|per cent|km|kilomet(?:er|re)s?|m|met(?:er|re)s?|cm|mm|mi|miles?|ft|feet|"
          r"inch(?:es)?|kg|kilograms?|g|grams?|lb|pounds?|tonnes?|tons?|l|litres?|liters?|"
          r"°[CF]?|degrees?|km2|sq|square|hectares?|acres?|mph|km/h|hours?|years? old|"
          r"people|inhabitants|residents|employees|students|soldiers|votes|copies|"
          r"million|billion|trillion|thousand)")

RULES: list[tuple[float, str, re.Pattern]] = [
    (0.01, "full_date", re.compile(
        rf"\b\d{{1,2}}(?:st|nd|rd|th)?\s+{_MONTH}\.?,?\s+{_YEAR}\b|"
        rf"\b{_MONTH}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+{_YEAR}\b|"
        rf"\b{_YEAR}-\d{{2}}-\d{{2}}\b|\b\d{{1,2}}/\d{{1,2}}/{_YEAR}\b")),
    (0.01, "life_event", re.compile(
        rf"\b(?:born|died|founded|established|married|incorporated)\b[^.!?]{{0,40}}?"
        rf"\b(?:in|on)\s+(?:\d{{1,2}}\s+)?(?:{_MONTH}\s+)?{_YEAR}\b")),
    (0.34, "statistic", re.compile(
        rf"(?:[$€£¥]\s?\d[\d,.]*(?:\s+(?:million|billion|trillion|thousand))?)|"
        rf"\b\d[\d,]*(?:\.\d+)?\s?{_UNITS}(?![\w])")),
    (0.34, "month_year", re.compile(rf"\b{_MONTH}\s+{_YEAR}\b")),
    (0.67, "dated_event", re.compile(
        rf"\b(?:in|on|by|since|until|from|during|around|circa|c\.)\s+{_YEAR}s?\b|"
        rf"\({_YEAR}\)|\b{_YEAR}\s?[-–]\s?(?:{_YEAR}|\d{{2}})\b|\bthe\s+1[0-9]{{2}}0s\b")),
    (1.0, "precise_number", re.compile(r"\b\d{3,}\b|\b\d+[.,]\d+\b")),
]

_SENTENCE_END = re.compile(r"(?<=[.!?])([\"')\]]?)\s+(?=[\"'(\[]?[A-Z0-9])")


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Character spans of sentences (whitespace between them excluded)."""
    spans, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        spans.append((start, m.start() + len(m.group(1))))
        start = m.end()
    spans.append((start, len(text)))
    return [(a, b) for a, b in spans if text[a:b].strip()]


def factual_rule(sentence: str, strength: float) -> str | None:
    """Name of the first active rule matching ``sentence``, or None (kept)."""
    if strength <= 0:
        return None
    for tier, name, pattern in RULES:
        if strength >= tier and pattern.search(sentence):
            return name
    return None


def prune_facts(text: str, strength: float) -> tuple[str, list[tuple[str, str]]]:
    """(text without factual sentences, [(rule, removed sentence), ...])."""
    if strength <= 0:
        return text, []
    pieces, removed, last = [], [], 0
    for line_start, line in _lines(text):
        for a, b in split_sentences(line):
            sentence = line[a:b]
            rule = factual_rule(sentence, strength)
            if rule:
                removed.append((rule, sentence.strip()))
                pieces.append(text[last:line_start + a])
                last = line_start + b
    pieces.append(text[last:])
    out = "".join(pieces)
    out = re.sub(r"[ \t]{2,}", " ", out)
    out = re.sub(r" +\n", "\n", out)
    return re.sub(r"\n{3,}", "\n\n", out).strip(), removed


def _lines(text: str):
    pos = 0
    for line in text.split("\n"):
        yield pos, line
        pos += len(line) + 1


class FactualPruner(PipelineStep):
    """Removes factual sentences; drops documents left shorter than ``min_chars``."""

    type = "✂️ - MODIFIER"
    name = "factual-statement pruning"

    def __init__(self, strength: float, min_chars: int = 200,
                 exclusion_writer: DiskWriter | None = None):
        super().__init__()
        self.strength, self.min_chars = strength, min_chars
        self.exclusion_writer = exclusion_writer

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        with exclusions(self.exclusion_writer) as writer:
            for doc in data:
                with self.track_time():
                    text, removed = prune_facts(doc.text, self.strength)
                for rule, _ in removed:
                    self.stat_update(f"sentences_{rule}")
                if removed and writer:
                    writer.write(Document(text="\n".join(s for _, s in removed), id=doc.id,
                                          metadata={"filter_reason": "factual_sentences"}), rank)
                if len(text) < self.min_chars:
                    self.stat_update("dropped_too_short_after_pruning")
                    continue
                doc.text = text
                yield doc
