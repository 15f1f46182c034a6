"""Items of the six Table-1 benchmarks, in their original schemas and indexed as lm-eval renders
them (offline ``*_local`` tasks on a tmp data_dir), planted in a corpus in many variations and run
through ``loki filter`` with only the decontamination stage."""

from __future__ import annotations

import random
import re
import unicodedata

import pytest
import yaml
from benchmark_rows import (
    ARC,
    ARC_TRAIN,
    GSM8K,
    GSM8K_TRAIN,
    HELLASWAG,
    MMLU,
    TASKS,
    TRUTHFULQA,
    WINOGRANDE,
    write_data_dir,
)
from conftest import prose, read_output, write_jsonl

from loki.text_normalize import CONFUSABLES, match_words

pytest.importorskip("lm_eval")


# -- what a copy of an item looks like on the web ----------------------------------------------
def arc_gold(item: dict) -> str:
    return item["choices"]["text"][item["choices"]["label"].index(item["answerKey"])]


def hella_gold(item: dict) -> str:
    return item["endings"][int(item["label"])]


def wino_filled(item: dict) -> str:
    return item["sentence"].replace("_", item["option" + item["answer"]])


# (name, prompt, answer, as lm-eval renders it)
ITEMS = [
    ("arc", ARC[0]["question"], arc_gold(ARC[0]),
     f"Question: {ARC[0]['question']}\nAnswer: {arc_gold(ARC[0])}"),
    ("arc_shot", ARC_TRAIN[0]["question"], arc_gold(ARC_TRAIN[0]),
     f"Question: {ARC_TRAIN[0]['question']}\nAnswer: {arc_gold(ARC_TRAIN[0])}"),
    ("hellaswag", HELLASWAG[1]["ctx"], hella_gold(HELLASWAG[1]),
     f"{HELLASWAG[1]['activity_label']}: {HELLASWAG[1]['ctx_a']} He {hella_gold(HELLASWAG[1])}"),
    ("mmlu", MMLU[1]["question"], MMLU[1]["choices"][MMLU[1]["answer"]],
     MMLU[1]["question"] + "".join(f"\n{k}. {c}" for k, c in zip("ABCD", MMLU[1]["choices"]))
     + "\nAnswer: B"),
    ("truthfulqa", TRUTHFULQA[0]["question"], TRUTHFULQA[0]["mc2_targets"]["choices"][0],
     f"Q: {TRUTHFULQA[0]['question']}\nA: {TRUTHFULQA[0]['mc2_targets']['choices'][0]}"),
    ("winogrande", wino_filled(WINOGRANDE[0]).split(" because ")[0],
     "because " + wino_filled(WINOGRANDE[0]).split(" because ")[1], wino_filled(WINOGRANDE[0])),
    ("gsm8k", GSM8K[0]["question"], GSM8K[0]["answer"],
     f"Question: {GSM8K[0]['question']}\nAnswer: {GSM8K[0]['answer']}"),
    ("gsm8k_shot", GSM8K_TRAIN[0]["question"], GSM8K_TRAIN[0]["answer"],
     f"Question: {GSM8K_TRAIN[0]['question']}\nAnswer: {GSM8K_TRAIN[0]['answer']}"),
]
_LOOKALIKE = {"a": "а", "e": "е", "o": "о", "p": "р", "c": "с", "x": "х", "y": "у", "i": "і"}


def span(text: str, first: int, count: int) -> str:
    """``count`` normalised words of ``text`` from word ``first`` on, as they are written."""
    ws = match_words(text)
    return text[ws[first][1]:ws[first + count - 1][2]]


def hyphenate(text: str, width: int = 38) -> str:
    """Hard-wrapped at ``width`` columns, long words split with a hyphen at the line end."""
    lines, line = [], ""
    for word in text.split():
        if len(line) + len(word) + 1 > width and len(word) > 7 and len(line) < width - 4:
            cut = max(3, width - len(line) - 2)
            cut = min(cut, len(word) - 3)
            lines.append(f"{line} {word[:cut]}-".strip())
            line = word[cut:]
        elif len(line) + len(word) + 1 > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join([*lines, line])


VARIATIONS = {  # name -> copy text -> planted text
    "verbatim": lambda t: t,
    "upper_case": str.upper,
    "title_case": str.title,
    "punctuation_whitespace": lambda t: re.sub(r" ", lambda m: random.Random(len(t)).choice(
        [" ", "  ", "\n", " - ", ", ", " ... "]), t).replace(".", "!"),
    "hard_wrap": lambda t: hyphenate(t, 38),
    "curly_quotes_nbsp": lambda t: t.replace("'", "\u2019").replace(" ", "\u00a0"),
    "full_width": lambda t: "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else
                                    ("\u3000" if c == " " else c) for c in t),
    "soft_hyphens": lambda t: re.sub(r"(\w{3})(\w{3,})", "\\1\u00ad\\2", t),
    "zero_width_in_words": lambda t: re.sub(r"(\w{2})(\w{2,})", "\\1\u200b\\2", t),
    "zero_width_as_spaces": lambda t: t.replace(" ", "\u200b"),
    "cyrillic_lookalikes": lambda t: "".join(_LOOKALIKE.get(c, c) for c in t),
    # our own
    "nfd_decomposed": lambda t: unicodedata.normalize("NFD", t.replace("e", "é")),
    "added_diacritics": lambda t: re.sub(r"([aeiou])", "\\1\u0301", t),
    "bidi_marks": lambda t: re.sub(r"(\w{2})(\w)", "\\1\u200e\\2", t),
    "ligatures": lambda t: t.replace("fi", "\ufb01").replace("fl", "\ufb02"),
    "markdown_list": lambda t: "\n".join(f"* **{w}**" if i % 5 == 0 else w
                                         for i, w in enumerate(t.split())),
}


def boundary_span(prompt: str, answer: str) -> str:
    """13 words across the prompt -> answer boundary (as many answer words as possible, <= 6)."""
    p, a = len(match_words(prompt)), len(match_words(answer))
    k = min(6, a)
    return span(f"{prompt} {answer}", p - (13 - k), 13)


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("planted")
    rng = random.Random(16)
    data = write_data_dir(tmp / "data")
    docs, expect = [], {}  # id -> "caught" | "kept" | "exempt"

    def plant(doc_id: str, text: str, kind: str, sentences: int = 5) -> None:
        docs.append({"id": doc_id, "text": f"{prose(rng, sentences)}\n\n{text}\n\n"
                                           f"{prose(rng, sentences)}"})
        expect[doc_id] = kind

    for name, prompt, answer, rendered in ITEMS:
        copy = f"{prompt} {answer}"
        plant(f"{name}/rendered", rendered, "caught")
        for var, fn in VARIATIONS.items():
            plant(f"{name}/{var}", fn(copy), "caught")
        mid = len(match_words(copy)) // 2 - 6
        plant(f"{name}/span13", span(copy, mid, 13), "caught")
        plant(f"{name}/span12", span(copy, mid, 12), "kept")
        plant(f"{name}/boundary13", boundary_span(prompt, answer), "caught")
        plant(f"{name}/middle_of_long_doc", copy, "caught", sentences=60)
        if len(match_words(answer)) >= 13:
            plant(f"{name}/answer_alone", answer, "caught")
    for i in range(50):  # one item copied into 50 documents
        plant(f"copied/{i}", f"{ITEMS[0][1]} {ITEMS[0][2]}", "caught")
    # a 13-word phrase of TruthfulQA's prompt, alone, in 12 documents: frequent, exempt
    phrase = "Who was president of the United States in 1955? A: Dwight D. Eisenhower"
    for i in range(12):
        plant(f"phrase/{i}", f"They asked: {phrase}. Indeed so.", "exempt")
    for i in range(40):
        docs.append({"id": f"clean/{i}", "text": prose(rng, 12)})
        expect[f"clean/{i}"] = "kept"
    write_jsonl(tmp / "raw" / "corpus.jsonl", docs)
    config = {
        "input": {"paths": [str(tmp / "raw")]}, "output_dir": str(tmp / "out"),
        "work_dir": str(tmp / "work"), "executor": {"tasks": 1, "workers": 1},
        "clean": {"enabled": False}, "dedup": {"exact": False, "minhash": False},
        "semdedup": {"enabled": False}, "prototypes": {"enabled": False},
        "quality": {"enabled": False}, "factual": {"enabled": False},
        "decontam": {"lm_eval_tasks": TASKS, "offline": True, "data_dir": str(data)},
    }
    (tmp / "run.yaml").write_text(yaml.safe_dump(config))
    from loki.cli import main

    main(["filter", "--config", str(tmp / "run.yaml")])
    import json

    report = json.loads((tmp / "out" / "filter_report.json").read_text())
    return {"docs": {d["id"]: d["text"] for d in docs}, "expect": expect,
            "out": read_output(tmp / "out"), "report": report, "work": tmp / "work"}


def _touched(run) -> set[str]:
    kept_whole = {d["id"] for d in run["out"]}
    return {i for i in run["docs"] if i not in kept_whole}


def test_every_variant_of_every_task_is_caught(planted_run):
    touched = _touched(planted_run)
    missed = sorted(i for i, kind in planted_run["expect"].items()
                    if kind == "caught" and i not in touched)
    assert missed == []
    for name, *_ in ITEMS:  # each variation of the table, and ours, for every task
        assert {f"{name}/{v}" for v in VARIATIONS} <= touched
    assert all(f"copied/{i}" in touched for i in range(50))  # removed from all 50 copies


def test_short_spans_clean_documents_and_exempt_phrases_are_untouched(planted_run):
    out = {d["id"]: d["text"] for d in planted_run["out"]}
    for doc_id, kind in planted_run["expect"].items():
        if kind in ("kept", "exempt"):
            assert out.get(doc_id) == planted_run["docs"][doc_id], doc_id


def test_no_benchmark_ngram_survives_and_the_report_adds_up(planted_run):
    from loki.filtering.decontam import BenchmarkIndex

    index = BenchmarkIndex.load(str(planted_run["work"] / "decontam" / "index.npz"))
    frequent = {int(r["hash"]) for r in __import__("json").loads(
        (planted_run["work"] / "decontam" / "frequent.json").read_text())["frequent"]}
    assert not [d["id"] for d in planted_run["out"] if index.find(d["text"], frequent)]
    report = planted_run["report"]
    rows = {r["stage"]: r for r in report["stages"]}
    assert rows["read"]["adds_up"] and rows["decontam"]["adds_up"]
    d = rows["decontam"]
    assert d["docs_in"] == len(planted_run["docs"])
    tasks = report["decontamination"]["tasks"]
    assert set(tasks) == set(TASKS)
    for name, t in tasks.items():
        assert t["contaminated_docs"] == (t["replaced_by_fragments"] + t["dropped_too_many_hits"]
                                          + t["dropped_no_fragment_left"]) > 0, name
        assert t["chars_removed"] > 0
    assert tasks["arc_challenge"]["contaminated_docs"] >= 50  # the 50 copies
    freq = report["decontamination"]["frequent_ngrams"]
    assert {"ngram": "who was president of the united states in 1955 a dwight d eisenhower",
            "docs": 12} in freq["top"]
    assert report["decontamination"]["exempted_matches"] == 12
    md = (planted_run["work"].parent / "out" / "filter_report.md").read_text()
    assert "| arc_challenge |" in md and "dwight d eisenhower`: 12 docs" in md


def test_lookalikes_need_folding(tmp_path):
    from loki.filtering.benchmark_index import BenchmarkIndex

    copy = f"{ITEMS[0][1]} {ITEMS[0][2]}"
    swapped = VARIATIONS["cyrillic_lookalikes"](copy)
    path = write_jsonl(tmp_path / "arc.jsonl", ARC)
    task = {"name": "arc", "path": str(path), "fields": ["question", "choices", "answerKey"]}
    assert BenchmarkIndex.from_jsonl([task]).contaminated(swapped)
    assert not BenchmarkIndex.from_jsonl([task], fold_confusables=False).contaminated(swapped)
    assert set(_LOOKALIKE.values()) <= set(CONFUSABLES)
