"""Table 1: the Markdown is the JSON summary, rendered; presets hold the published settings."""

from __future__ import annotations

import json

import pytest

from loki.eval.presets import PRESETS, preset_rows
from loki.eval.suite import write_results
from loki.eval.table import PAPER_TABLE1, summarize


def _fake_results(rows):
    out = {}
    for i, r in enumerate(rows):
        metric, _, filt = r.metric.partition(",")
        out[r.task] = {r.metric: 0.1 + 0.1 * i, f"{metric}_stderr,{filt}": 0.01 * (i + 1)}
    return out


def test_markdown_matches_json(tmp_path):
    rows = preset_rows("leaderboard")
    summary = summarize(_fake_results(rows), rows)
    summary["preset"] = "leaderboard"
    js, md = write_results(summary, tmp_path)
    data = json.loads(js.read_text())
    lines = {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[2:-1]]
             for ln in md.read_text().splitlines() if ln.startswith("| ")}
    for label, r in data["rows"].items():
        cells = lines[f"{label} ({r['num_fewshot']})"]
        assert float(cells[1]) == pytest.approx(100 * r["value"], abs=0.005)
        assert float(cells[2]) == pytest.approx(100 * r["stderr"], abs=0.005)
        assert float(cells[3]) == PAPER_TABLE1["LokiLM 1.4B (paper)"][label]
    values = [r["value"] for r in data["rows"].values()]
    assert data["average"] == pytest.approx(sum(values) / 6)
    assert data["average_without_truthfulqa"] == pytest.approx(
        sum(v for k, v in zip(data["rows"], values) if k != "TruthfulQA") / 5)
    assert float(lines["Average"][1]) == pytest.approx(100 * data["average"], abs=0.005)
    assert float(lines["Average without TruthfulQA"][1]) == pytest.approx(
        100 * data["average_without_truthfulqa"], abs=0.005)
    # the peers' averages reproduce the paper's printed ones (Gemma 2B: 45.46 and 47.55)
    gemma = list(PAPER_TABLE1).index("Gemma 2B")
    assert lines["Average"][3 + gemma] == "45.46"
    assert lines["Average without TruthfulQA"][3 + gemma] == "47.55"


def test_presets_hold_published_settings():
    lb = {r.label: (r.num_fewshot, r.metric) for r in PRESETS["leaderboard"]}
    assert lb == {"ARC-Challenge": (25, "acc_norm,none"), "HellaSwag": (10, "acc_norm,none"),
                  "MMLU": (5, "acc,none"), "TruthfulQA": (0, "acc,none"),
                  "Winogrande": (5, "acc,none"), "GSM8K": (5, "exact_match,strict-match")}
    paper = {r.label: r.num_fewshot for r in PRESETS["paper"]}
    assert paper == {"ARC-Challenge": 10, "HellaSwag": 5, "MMLU": 5, "Winogrande": 5,
                     "GSM8K": 8, "TruthfulQA": 10}
    offline = preset_rows("leaderboard", offline=True)
    assert all(r.task.endswith("_local") for r in offline)
