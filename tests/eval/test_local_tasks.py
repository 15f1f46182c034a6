"""The offline leaderboard tasks: lm-eval's own task definitions on local JSON lines."""

from __future__ import annotations

import json
import os
from pathlib import Path

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


def test_run_bare_it_says_in_one_line_which_options_it_needs():
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-m", "loki.eval.local_tasks"], capture_output=True,
                          text=True, cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == ("python -m loki.eval.local_tasks: error: the following arguments are "
                           "required: --data_dir, --out\n")


def test_the_readme_command_binds_the_task_it_names(tmp_path):
    from loki.cli import module_main

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert ("python -m loki.eval.local_tasks --tasks '[loki_demo_cloze]' --data_dir "
            "data/demo/tasks \\\n    --out runs/demo/lm_eval_tasks") in readme
    (tmp_path / "loki_demo_cloze").mkdir()
    for split in ("train", "test"):
        (tmp_path / "loki_demo_cloze" / f"{split}.jsonl").write_text("{}\n")
    module_main("loki.eval.local_tasks", "python -m loki.eval.local_tasks",
                ["--tasks", "[loki_demo_cloze]", "--data_dir", str(tmp_path),
                 "--out", str(tmp_path / "out")])
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["loki_demo_cloze.yaml"]
