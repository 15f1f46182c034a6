"""The offline leaderboard tasks: lm-eval's own task definitions on local JSON lines."""

from __future__ import annotations

import json

import pytest

from loki.eval.local_tasks import packaged_tasks
from loki.eval.suite import SuiteConfig, run_suite
from tests.eval.conftest import write_jsonl

pytest.importorskip("lm_eval")

ROWS = {  # one row per dataset, in the original datasets' schemas
    "arc_challenge": {"id": "a", "question": "What melts ice?",
                      "choices": {"text": ["heat", "cold", "dark"], "label": ["A", "B", "C"]},
                      "answerKey": "A"},
    "hellaswag": {"ind": 1, "activity_label": "Cooking", "ctx_a": "A man cracks an egg.",
                  "ctx_b": "he", "ctx": "A man cracks an egg. he", "endings": [
                      "fries it.", "sings.", "flies away.", "sleeps."], "source_id": "x",
                  "split": "val", "split_type": "indomain", "label": "0"},
    "mmlu": {"question": "2 + 2 =", "subject": "elementary_mathematics",
             "choices": ["3", "4", "5", "6"], "answer": 1},
    "truthfulqa": {"question": "Is the earth flat?",
                   "mc1_targets": {"choices": ["No.", "Yes."], "labels": [1, 0]},
                   "mc2_targets": {"choices": ["No.", "It is round.", "Yes."],
                                   "labels": [1, 1, 0]}},
    "winogrande": {"sentence": "The cup fell off the table because _ was slippery.",
                   "option1": "the cup", "option2": "the table", "answer": "1"},
    "gsm8k": {"question": "Tom has 2 apples and buys 3. How many?",
              "answer": "2 + 3 = 5\n#### 5"},
}
SPLITS = {"arc_challenge": ["train", "validation", "test"], "hellaswag": ["train", "validation"],
          "mmlu": ["dev", "test"], "truthfulqa": ["validation"],
          "winogrande": ["train", "validation"], "gsm8k": ["train", "test"]}


def test_leaderboard_preset_runs_offline(lm, tmp_path):
    for dataset, splits in SPLITS.items():
        for split in splits:
            rows = [{**ROWS[dataset], "row": i} for i in range(3)]  # distinct few-shot pool
            write_jsonl(tmp_path / "data" / dataset / f"{split}.jsonl", rows)
    suite = SuiteConfig(preset="leaderboard", offline=True, data_dir=str(tmp_path / "data"),
                        num_fewshot=1, limit=2, bootstrap_iters=0)
    lm.max_gen_toks = 4
    try:
        summary = run_suite(lm, suite, tmp_path / "out")
    finally:
        lm.max_gen_toks = 256
    assert list(summary["rows"]) == ["ARC-Challenge", "HellaSwag", "MMLU", "Winogrande", "GSM8K",
                                     "TruthfulQA"]
    assert all(0.0 <= r["value"] <= 1.0 for r in summary["rows"].values())
    assert json.loads((tmp_path / "out" / "results.json").read_text())["limited"] is True
    assert {f"{d}_local" for d in ("arc_challenge", "gsm8k")} <= set(packaged_tasks())


def test_missing_data_leaves_no_tasks_folder_behind(tmp_path, demo_data):
    from loki.errors import LokiError
    from loki.eval.local_tasks import prepare_tasks

    with pytest.raises(LokiError, match="local data for task 'loki_demo_cloze' is missing"):
        prepare_tasks(["loki_demo_pairs", "loki_demo_cloze"], tmp_path / "nowhere",
                      tmp_path / "tasks")
    assert not (tmp_path / "tasks").exists()
    prepare_tasks(["loki_demo_pairs"], demo_data, tmp_path / "tasks")
    assert [p.name for p in (tmp_path / "tasks").iterdir()] == ["loki_demo_pairs.yaml"]
