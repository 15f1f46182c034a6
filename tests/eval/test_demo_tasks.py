"""Demo tasks: built from held-out documents only, in the fields the decontamination index reads."""

from __future__ import annotations

import json

import pytest

from loki.eval.demo_tasks import CLOZE, LASTWORD, PAIRS, held_out, write_demo_tasks

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike".split()


def _docs(n=120):
    docs = []
    for i in range(n):
        # every 8 consecutive words hold the document number or a unique token; 15 words, so
        # minimal pairs (13 words at least) can be made from them
        sents = [f"Document {i} sentence {k} mentions {WORDS[(i + k) % 13]} token{i}q{k} "
                 f"beside the {WORDS[(i * k) % 13]} and the token{i}r{k} "
                 f"{WORDS[(i + 2 * k) % 13]} forever." for k in range(9)]
        docs.append({"id": f"doc-{i}", "text": " ".join(sents), "source": "web"})
    return docs


def test_build_from_held_out_documents(tmp_path):
    raw = tmp_path / "raw.jsonl"
    docs = _docs()
    raw.write_text("".join(json.dumps(d) + "\n" for d in docs))
    m = write_demo_tasks([raw], tmp_path / "tasks", n_test=20, n_train=4, held_out_fraction=0.2)
    held = {d["id"] for d in docs if held_out(d["id"], 0.2)}
    assert set(m["held_out_ids"]) <= held and 0 < len(held) < len(docs)
    cloze = [json.loads(x) for x in (tmp_path / "tasks" / CLOZE / "test.jsonl").open()]
    assert len(cloze) == 20
    for item in cloze:
        assert item["source_id"] in held and len(item["choices"]) == 4
        gold = item["choices"][item["gold"]].strip()
        text = next(d["text"] for d in docs if d["id"] == item["source_id"])
        assert f"{item['query']} {gold}" in text  # the true next sentence
    last = [json.loads(x) for x in (tmp_path / "tasks" / LASTWORD / "test.jsonl").open()]
    assert last and all(x["answer"] == "forever" for x in last)
    assert all(x["query"].split()[-1] in WORDS and x["source_id"] in held for x in last)
    pairs = [json.loads(x) for x in (tmp_path / "tasks" / PAIRS / "test.jsonl").open()]
    assert len(pairs) == 20 and {p["gold"] for p in pairs} == {0, 1}
    assert {p["edit"] for p in pairs} == {"swap", "replace"}
    for p in pairs:
        good, bad = p["choices"][p["gold"]], p["choices"][1 - p["gold"]]
        text = next(d["text"] for d in docs if d["id"] == p["source_id"])
        assert p["source_id"] in held and good in text and bad not in text and p["query"] == ""
        g, b = good.split(), bad.split()
        changed = [i for i in range(len(g)) if g[i] != b[i]]
        assert len(g) == len(b) and changed and changed[0] > 0  # the first word stays
        if p["edit"] == "swap":
            i = changed[0]
            assert changed == [i, i + 1] and (g[i], g[i + 1]) == (b[i + 1], b[i])
        else:
            assert len(changed) == 1
    # cached: same settings -> same manifest, files untouched
    again = write_demo_tasks([raw], tmp_path / "tasks", n_test=20, n_train=4,
                             held_out_fraction=0.2)
    assert again == m


def test_decontamination_index_reads_the_items(tmp_path):
    pytest.importorskip("datatrove")
    from loki.filtering.decontam import BenchmarkIndex

    raw = tmp_path / "raw.jsonl"
    docs = _docs()
    raw.write_text("".join(json.dumps(d) + "\n" for d in docs))
    m = write_demo_tasks([raw], tmp_path / "tasks", n_test=20, n_train=4, held_out_fraction=0.2)
    index = BenchmarkIndex.from_jsonl(
        [{"name": name, "path": path, "fields": m["decontamination_fields"], "optional": False}
         for name, path in m["files"].items()], n=8)
    held_doc = next(d for d in docs if d["id"] in m["held_out_ids"])
    train_doc = next(d for d in docs if not held_out(d["id"], 0.2))
    assert index.contaminated(held_doc["text"])
    assert not index.contaminated(train_doc["text"])
