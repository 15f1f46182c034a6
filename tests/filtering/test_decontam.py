"""BenchmarkIndex and the GPT-3 decontamination rule, alone and inside the pipeline."""

from __future__ import annotations

import pytest
from conftest import filter_config, prose, run_filter, stage_row, write_jsonl

from loki.errors import LokiError
from loki.filtering.config import BenchmarkTask
from loki.filtering.decontam import BenchmarkIndex, decontaminate

QUESTION = ("Janet has three apples and buys five more at the market on Tuesday, then gives two "
            "of them to her brother. How many apples does Janet have left at the end of the day?")
ANSWER = ("Janet starts with three apples, buys five more to reach eight, and gives two away, "
          "so she has six apples left at the end of the day.")


@pytest.fixture
def tasks(tmp_path):
    path = write_jsonl(tmp_path / "tasks" / "math.jsonl", [
        {"question": QUESTION, "answer": ANSWER},
        {"question": "Too short to index.", "answer": "4"},
    ])
    mc = write_jsonl(tmp_path / "tasks" / "mc.jsonl", [
        {"query": "Which gas do plants take in from the air when they make their food using light",
         "choices": ["oxygen", "carbon dioxide"], "gold": 1}])
    return [BenchmarkTask("math", str(path), ["question", "answer"]),
            BenchmarkTask("mc", str(mc), ["query", "choices"])]


def test_index_finds_prompts_and_answers_and_roundtrips(tmp_path, tasks):
    index = BenchmarkIndex.from_jsonl(tasks)
    assert index.contaminated(f"Intro text. {QUESTION.upper()} Outro.")  # case and punctuation
    assert index.contaminated("so: janet starts with three apples, buys five more to reach eight; "
                              "and gives two away -- so she has six apples left")
    hits = index.find("Which gas do plants take in from the air when they make their food using "
                      "light? Carbon dioxide.")
    assert hits and hits[0].tasks == {"mc"}  # prompt + gold choice concatenation
    assert not index.contaminated(prose(__import__("random").Random(0), 30))
    assert index.stats["math"]["items_shorter_than_n"] == 1
    index.save(str(tmp_path / "idx.npz"))
    again = BenchmarkIndex.load(str(tmp_path / "idx.npz"))
    assert again.tasks == index.tasks and len(again) == len(index)
    assert again.contaminated(QUESTION)


def test_missing_task_files(tmp_path):
    with pytest.raises(LokiError, match="does not exist"):
        BenchmarkIndex.from_jsonl([BenchmarkTask("x", str(tmp_path / "nope.jsonl"))])
    index = BenchmarkIndex.from_jsonl([BenchmarkTask("x", str(tmp_path / "nope.jsonl"),
                                                     optional=True)])
    assert index.stats["x"]["missing_file"] == 1 and len(index) == 0


def test_gpt3_window_rule_exact_fragments(tasks, rng):
    index = BenchmarkIndex.from_jsonl(tasks)
    before, after = prose(rng, 10), prose(rng, 10)
    text = f"{before} {QUESTION} {after}"
    hits = index.find(text)
    assert len(hits) == 1
    start, end = hits[0].start, hits[0].end
    assert text[start:end] == QUESTION[:-1]  # the final "?" is not a word
    frags = decontaminate(text, hits, window=200, min_fragment=200)
    assert frags == [text[: start - 200], text[end + 200:]]
    text2 = f"Short intro. {QUESTION} {after}"
    hits2 = index.find(text2)
    # the 13-char head is shorter than min_fragment and dropped; the tail starts 200 chars later
    assert decontaminate(text2, hits2) == [text2[hits2[0].end + 200:]]
    many = " ".join(f"{prose(rng, 1)} {QUESTION}" for _ in range(11))
    assert decontaminate(many, index.find(many), max_hits=10) is None


def test_pipeline_removes_planted_items_and_keeps_the_rest(tmp_path, tasks, rng):
    before, after = prose(rng, 12), prose(rng, 12)
    clean = [{"id": f"c{i}", "text": prose(rng, 12)} for i in range(4)]
    rows = clean + [{"id": "leak", "text": f"{before} {QUESTION} {ANSWER} {after}"}]
    write_jsonl(tmp_path / "raw" / "a.jsonl", rows)
    cfg = filter_config(tmp_path, [str(tmp_path / "raw")],
                        decontam={"tasks": tasks, "max_corpus_docs": 10})
    report, out = run_filter(cfg)
    by_id = {d["id"]: d["text"] for d in out}
    for row in clean:
        assert by_id[row["id"]] == row["text"]
    leak_start = len(before) + 1
    leak_end = leak_start + len(QUESTION) + 1 + len(ANSWER) - 1  # answer ends with "."
    text = rows[-1]["text"]
    assert by_id["leak/part0"] == text[: leak_start - 200]
    assert by_id["leak/part1"] == text[leak_end + 200:]
    assert report["benchmark_hits_per_task"] == {"math": 1}
    assert stage_row(report, "decontam")["docs_out"] == 6


def test_too_common_ngrams_are_ignored(tmp_path, tasks, rng):
    rows = [{"id": f"d{i}", "text": f"{prose(rng, 8)} {QUESTION} {prose(rng, 8)}"} for i in range(3)]
    write_jsonl(tmp_path / "raw" / "a.jsonl", rows)
    cfg = filter_config(tmp_path, [str(tmp_path / "raw")],
                        decontam={"tasks": tasks, "max_corpus_docs": 2})
    report, out = run_filter(cfg)
    assert sorted(d["text"] for d in out) == sorted(r["text"] for r in rows)
    assert report["benchmark_hits_per_task"] == {}
