"""BenchmarkIndex and the GPT-3 decontamination rule, alone and inside the pipeline."""

from __future__ import annotations

from collections import Counter

import pytest
from conftest import filter_config, prose, run_filter, stage_row, write_jsonl

from loki.errors import LokiError
from loki.filtering.decontam import BenchmarkIndex, decontaminate, ngram_hash
from loki.filtering.stage_config import BenchmarkTask

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


def test_copied_items_are_removed_however_often_lone_common_phrases_are_kept(tmp_path, tasks,
                                                                           rng):
    lone = " ".join(QUESTION.split()[2:15])  # exactly 13 words of the item, alone
    rows = [{"id": f"d{i}", "text": f"{prose(rng, 8)} {QUESTION} {prose(rng, 8)}"} for i in range(3)]
    rows += [{"id": f"p{i}", "text": f"{prose(rng, 8)} Then: {lone}; fine. {prose(rng, 8)}"}
             for i in range(3)]
    write_jsonl(tmp_path / "raw" / "a.jsonl", rows)
    cfg = filter_config(tmp_path, [str(tmp_path / "raw")],
                        decontam={"tasks": tasks, "max_corpus_docs": 2})
    report, out = run_filter(cfg)
    kept = {d["id"]: d["text"] for d in out}
    assert not any(f"d{i}" in kept for i in range(3))  # 3 copies > 2: still removed from all
    assert all(kept[f"p{i}"] == rows[3 + i]["text"] for i in range(3))  # a common lone phrase
    dec = report["decontamination"]
    assert dec["exempted_matches"] == 3 and dec["frequent_ngrams"]["threshold_docs"] == 2
    assert dec["frequent_ngrams"]["top"] == [{"ngram": lone.lower().replace(",", ""), "docs": 3}]
    assert stage_row(report, "decontam")["adds_up"]


def test_lone_frequent_ngram_is_exempt_only_alone(tasks):
    index = BenchmarkIndex.from_jsonl(tasks)
    words = QUESTION.split()
    lone, longer = " ".join(words[:13]), " ".join(words[:14])
    frequent = {ngram_hash(w for w, _, _ in index.words(lone))}
    exempted: Counter = Counter()
    assert index.find(f"Say {lone} twice", frequent, exempted) == [] and sum(exempted.values()) == 1
    assert len(index.find(f"Say {longer} twice", frequent)) == 1  # two n-grams: not exempt
    assert len(index.find(f"Say {lone} twice")) == 1  # not frequent: caught


def test_custom_files_in_the_original_schemas(tmp_path):
    from benchmark_rows import ARC, HELLASWAG, MMLU

    arc = write_jsonl(tmp_path / "arc.jsonl", ARC)
    hs = write_jsonl(tmp_path / "hs.jsonl", HELLASWAG)
    mmlu = write_jsonl(tmp_path / "mmlu.jsonl", MMLU)
    index = BenchmarkIndex.from_jsonl([
        BenchmarkTask("arc", str(arc), ["question", "choices", "answerKey"]),
        BenchmarkTask("hellaswag", str(hs), ["ctx", "endings", "label"]),
        BenchmarkTask("mmlu", str(mmlu), ["question", "choices", "answer"])])

    def boundary(prompt: str, gold: str) -> str:  # 9 prompt words + 4 answer words
        return " ".join(prompt.split()[-9:] + gold.split()[:4])

    for item in ARC:  # dict choices {text, label}, gold by answerKey (letters or digits)
        gold = item["choices"]["text"][item["choices"]["label"].index(item["answerKey"])]
        assert index.find(boundary(item["question"], gold))[0].tasks == {"arc"}
    for item in HELLASWAG:  # label is the index, as a string
        assert index.contaminated(boundary(item["ctx"], item["endings"][int(item["label"])]))
        assert index.contaminated(item["endings"][int(item["label"])])  # answers alone
    for item in MMLU:  # answer is an int index
        assert index.contaminated(boundary(item["question"], item["choices"][item["answer"]]))
    assert not index.contaminated(boundary(MMLU[0]["question"], MMLU[0]["choices"][1]))


def test_a_task_that_indexes_nothing_is_a_one_line_error(tmp_path, rng, capsys):
    from benchmark_rows import ARC

    from loki.cli import main

    arc = write_jsonl(tmp_path / "arc.jsonl", ARC)
    write_jsonl(tmp_path / "raw" / "a.jsonl", [{"id": "x", "text": prose(rng, 12)}])
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"""
input: {{paths: ["{tmp_path}/raw"]}}
output_dir: {tmp_path}/out
work_dir: {tmp_path}/work
clean: {{enabled: false}}
dedup: {{exact: false, minhash: false}}
semdedup: {{enabled: false}}
prototypes: {{enabled: false}}
quality: {{enabled: false}}
factual: {{enabled: false}}
decontam: {{tasks: [{{name: arc, path: {arc}, fields: [query, endings]}}]}}
""")
    with pytest.raises(SystemExit) as exit_info:
        main(["filter", "--config", str(cfg)])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1
    assert "'arc'" in err and "['query', 'endings']" in err and "answerKey" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()
    with pytest.raises(LokiError, match="no packaged offline variant of \\['arc_easy'\\]"):
        run_filter(filter_config(tmp_path, [str(tmp_path / "raw")], decontam={
            "lm_eval_tasks": ["arc_easy"], "offline": True, "data_dir": str(tmp_path)}))
