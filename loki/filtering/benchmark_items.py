"""What text a benchmark item puts into the decontamination index.

Two sources, both yielding, per item, the strings whose n-grams are indexed:

- ``lm_eval_texts``: an lm-eval task as lm-eval evaluates it. Each item's rendered prompt
  (``doc_to_text``) joined by the task's target delimiter with each gold target, and every choice,
  over the eval split and the few-shot split. Multiple-input tasks (Winogrande: the choices are
  contexts) join each context with the target. Two more joins catch copies that drop the
  template: the prompt without the words every prompt of the task starts or ends with
  ("Question:", "Answer:", a fixed few-shot preamble) joined with the gold; each of the item's
  own fields quoted inside the prompt (the question before MMLU's option list) joined with the
  gold; and where the choices are bare labels (MMLU's A-D) the option texts found in the item.
- ``field_texts``: explicit fields of a JSONL item in the original dataset schemas: strings,
  lists, dicts (ARC ``choices: {text, label}``), and gold answers given as an int index (MMLU
  ``answer``), a label (ARC ``answerKey``), a label index as a string (HellaSwag ``label``) or text
  (GSM8K ``answer``).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from loki.text_normalize import match_words

ANSWER_KEYS = ("answer", "answerKey", "label", "gold")


def _strings(value) -> list[str]:
    """Every string inside a field value (lists and dicts included)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    return []


def _options(item: dict, fields: Iterable[str]) -> tuple[list[str], list[str]] | None:
    """(option texts, their labels) of a multiple-choice item: the first list of strings among the
    fields, or a dict holding one (ARC ``{text, label}``)."""
    for name in fields:
        value = item.get(name)
        labels: list[str] = []
        if isinstance(value, dict):
            labels = [str(x) for x in value.get("label", [])]
            value = value.get("text", value.get("choices"))
        if isinstance(value, list) and value and all(isinstance(x, str) for x in value):
            return value, labels
    return None


def _resolve(gold, options: tuple[list[str], list[str]] | None) -> list[str]:
    """Gold answer value -> answer texts (index, label, label index, letter, or the text)."""
    if isinstance(gold, list):
        return [t for g in gold for t in _resolve(g, options)]
    texts, labels = options or ([], [])
    if isinstance(gold, bool) or gold is None:
        return []
    if isinstance(gold, int):
        return [texts[gold]] if 0 <= gold < len(texts) else []
    if not isinstance(gold, str):
        return []
    key = gold.strip()
    if texts:
        if key in labels:
            return [texts[labels.index(key)]]
        if key.isdigit() and int(key) < len(texts):
            return [texts[int(key)]]
        if len(key) == 1 and "A" <= key.upper() <= "Z" and ord(key.upper()) - 65 < len(texts):
            return [texts[ord(key.upper()) - 65]]
    return [gold]


def field_texts(item: dict, fields: list[str]) -> list[str]:
    """The strings indexed for one item of a custom file: every string in the named fields and the
    prompt (the named string fields that are not answers) joined with each gold answer."""
    texts = [s for name in fields for s in _strings(item.get(name))]
    options = _options(item, fields)
    prompt = " ".join(item[f] for f in fields
                      if isinstance(item.get(f), str) and f not in ANSWER_KEYS)
    for key in ANSWER_KEYS:
        if key in item and prompt:
            texts += [f"{prompt} {gold}" for gold in _resolve(item[key], options)]
    return texts


@dataclass
class RenderedItem:
    """One lm-eval document as evaluated: its prompts, gold continuations and choices."""

    prompts: list[str]
    golds: list[str]
    choices: list[str] = field(default_factory=list)
    option_golds: list[str] = field(default_factory=list)  # gold option text behind a label
    inner: list[str] = field(default_factory=list)  # the doc's fields quoted inside the prompt


def render(task, doc: dict) -> RenderedItem:
    """An lm-eval ``ConfigurableTask``'s view of ``doc``."""
    text, target = task.doc_to_text(doc), task.doc_to_target(doc)
    choices = task.doc_to_choice(doc) if task.config.doc_to_choice is not None else []
    choices = [str(c) for c in choices or []]
    targets = target if isinstance(target, list) else [target]
    if isinstance(text, int):  # multiple input: every choice is a context for the target
        return RenderedItem(choices, [str(t) for t in targets], choices)
    golds = [choices[t] if isinstance(t, int) and 0 <= t < len(choices) else str(t)
             for t in targets if not isinstance(t, bool)]
    item = RenderedItem([str(text)], golds, choices, inner=_quoted_fields(doc, str(text)))
    if choices and all(len(c.strip()) <= 2 for c in choices):  # labels: the texts are in the doc
        found = _options(doc, doc.keys())
        if found and len(found[0]) == len(choices):
            item.choices = found[0]
            item.option_golds = [found[0][t] for t in targets
                                 if isinstance(t, int) and 0 <= t < len(found[0])]
    return item


def _key(text: str) -> str:
    return " " + " ".join(w for w, _, _ in match_words(text)) + " "


def _quoted_fields(doc: dict, prompt: str) -> list[str]:
    """The doc's string fields that appear word for word inside the rendered prompt (the question
    between a template's words, or before MMLU's option list): a copy may join them directly
    with the answer."""
    whole = _key(prompt)
    return [v for v in doc.values() if isinstance(v, str) and _key(v).strip()
            and _key(v) != whole and _key(v) in whole]


def _common_edges(prompts: list[str]) -> tuple[int, int]:
    """How many words every prompt starts and ends with (the template around the item)."""
    word_lists = [[w for w, _, _ in match_words(p)] for p in dict.fromkeys(prompts)]
    if len(word_lists) < 2:
        return 0, 0
    shortest = min(len(w) for w in word_lists)
    head = 0
    while head < shortest and len({w[head] for w in word_lists}) == 1:
        head += 1
    tail = 0
    while tail < shortest - head and len({w[-1 - tail] for w in word_lists}) == 1:
        tail += 1
    return head, tail


def _strip_words(text: str, head: int, tail: int) -> str:
    spans = match_words(text)
    if len(spans) <= head + tail:
        return ""
    return text[spans[head][1]:spans[len(spans) - 1 - tail][2]]


@contextlib.contextmanager
def compiled_templates() -> Iterator[None]:
    """lm-eval compiles a task's Jinja template on every call (``lm_eval.utils.apply_template``,
    ~10 ms); indexing renders every document of every split, so while it does, each template is
    compiled once, in lm-eval's own environment (same filters, same output)."""
    from lm_eval import utils

    original = utils.apply_template
    compile_once = functools.lru_cache(maxsize=1024)(utils.env.from_string)
    utils.apply_template = lambda template, doc: compile_once(template).render(**doc)
    try:
        yield
    finally:
        utils.apply_template = original


def lm_eval_texts(task) -> Iterator[list[str]]:
    """Per document of an lm-eval task (eval split, then few-shot split): the strings indexed."""
    docs = list(task.eval_docs)
    try:
        shots = task.fewshot_docs()
    except Exception:  # a task without a few-shot source: nothing more to index
        shots = None
    docs += list(shots or [])
    delim = task.config.target_delimiter
    with compiled_templates():
        items = [render(task, doc) for doc in docs]
    head, tail = _common_edges([p for it in items for p in it.prompts])
    for it in items:
        texts = [f"{p}{delim}{g}" for p in it.prompts for g in it.golds] + it.choices
        texts += [f"{q} {g}" for q in it.inner for g in it.golds + it.option_golds]
        for p in it.prompts:
            core = _strip_words(p, head, tail) if head or tail else ""
            texts += [f"{core} {g}" for g in it.golds + it.option_golds if core]
            texts += [f"{p}{delim}{g}" for g in it.option_golds]
        if not it.golds and not it.choices:
            texts += it.prompts
        yield texts
