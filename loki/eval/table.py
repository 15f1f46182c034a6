"""Table 1: the results summary (JSON) and its Markdown rendering, laid out like the paper's.

``summarize`` reduces lm-eval's output to one number (and its stderr) per row, plus the two
averages the paper reports (all rows, and all rows but TruthfulQA). ``render_markdown`` prints
that summary, in percent, next to the paper's numbers for reference; the Markdown is produced
from the JSON only, so the two always agree.
"""

from __future__ import annotations

import math
from typing import Any

from loki.eval.presets import TRUTHFULQA, BenchmarkRow

# Table 1 of the LokiLM paper (percent). LokiLM's shots are the paper's; the peers' are the
# Open LLM Leaderboard v1 settings.
PAPER_TABLE1: dict[str, dict[str, float]] = {
    "LokiLM 1.4B (paper)": {"ARC-Challenge": 43.9, "HellaSwag": 64.3, "MMLU": 54.8,
                            "Winogrande": 67.8, "GSM8K": 34.2, "TruthfulQA": 31.9},
    "Gemma 2B": {"ARC-Challenge": 46.93, "HellaSwag": 72.48, "MMLU": 34.38, "Winogrande": 68.27,
                 "GSM8K": 15.69, "TruthfulQA": 35.01},
    "Danube 2 1.8B": {"ARC-Challenge": 43.34, "HellaSwag": 72.95, "MMLU": 40.20,
                      "Winogrande": 68.03, "GSM8K": 29.80, "TruthfulQA": 38.01},
    "Qwen1.5 1.8B": {"ARC-Challenge": 37.88, "HellaSwag": 61.42, "MMLU": 46.71,
                     "Winogrande": 60.3, "GSM8K": 33.59, "TruthfulQA": 39.43},
    "Stable LM 2 1.6B": {"ARC-Challenge": 43.34, "HellaSwag": 70.45, "MMLU": 38.95,
                         "Winogrande": 64.56, "GSM8K": 17.44, "TruthfulQA": 36.78},
    "MPT 1.3B": {"ARC-Challenge": 25.77, "HellaSwag": 26.08, "MMLU": 24.50, "Winogrande": 50.36,
                 "GSM8K": 10.17, "TruthfulQA": 47.57},
    "Phi-1.5 1.3B": {"ARC-Challenge": 52.9, "HellaSwag": 63.79, "MMLU": 43.89,
                     "Winogrande": 72.22, "GSM8K": 12.43, "TruthfulQA": 40.89},
}


def summarize(lm_eval_results: dict[str, Any], rows: list[BenchmarkRow]) -> dict[str, Any]:
    """One entry per row (fractions in [0, 1]) and the two averages."""
    table: dict[str, dict[str, Any]] = {}
    for row in rows:
        res = lm_eval_results.get(row.task)
        if res is None or row.metric not in res:
            raise KeyError(f"lm-eval results lack {row.task}/{row.metric}")
        metric, _, filt = row.metric.partition(",")
        stderr = res.get(f"{metric}_stderr,{filt}")
        table[row.label] = {
            "task": row.task, "metric": row.metric, "num_fewshot": row.num_fewshot,
            "value": float(res[row.metric]),
            "stderr": None if stderr in (None, "N/A") else float(stderr),
        }
    return {"rows": table, **averages(table)}


def averages(table: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    def mean(labels: list[str]) -> float | None:
        vals = [table[k]["value"] for k in labels]
        return sum(vals) / len(vals) if vals else None

    return {"average": mean(list(table)),
            "average_without_truthfulqa": mean([k for k in table if k != TRUTHFULQA])}


def metric_name(key: str) -> str:
    """An lm-eval metric key as a reader names it: ``acc_norm,none`` -> ``acc_norm`` (the part
    after the comma is lm-eval's filter, ``none`` when there is none)."""
    return key.replace(",none", "")


def _pct(x: float | None, digits: int = 2) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f}"


def render_markdown(summary: dict[str, Any], title: str = "Loki", peers: bool = True) -> str:
    """Markdown Table 1 from a summary (``summarize``'s output, possibly with run metadata)."""
    rows = summary["rows"]
    peer_names = [p for p in PAPER_TABLE1 if peers and any(k in PAPER_TABLE1[p] for k in rows)]
    head = ["benchmark (shots)", "metric", title, "± stderr", *peer_names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, r in rows.items():
        cells = [f"{label} ({r['num_fewshot']})", metric_name(r["metric"]),
                 _pct(r["value"]), _pct(r["stderr"])]
        cells += [f"{PAPER_TABLE1[p][label]:.2f}" if label in PAPER_TABLE1[p] else "–"
                  for p in peer_names]
        lines.append("| " + " | ".join(cells) + " |")
    averages_shown = [("average", "Average")]
    if TRUTHFULQA in rows:  # the paper's second average only means something with that row
        averages_shown.append(("average_without_truthfulqa", "Average without TruthfulQA"))
    for key, name in averages_shown:
        cells = [name, "", _pct(summary.get(key)), ""]
        for p in peer_names:
            ref = {k: {"value": v} for k, v in PAPER_TABLE1[p].items() if k in rows}
            val = averages(ref)[key] if ref else None
            cells.append("–" if val is None else f"{val:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    notes = []
    if summary.get("forced"):
        notes.append(f"**Forced re-run** of the one-shot suite: {summary.get('force_reason')}")
    if peer_names:
        notes.append("Reference columns are the paper's Table 1 (peers: Open LLM Leaderboard v1 "
                     "settings; LokiLM: the paper's shots). Scores in percent.")
    return "\n".join(lines) + ("\n\n" + "\n\n".join(notes) if notes else "") + "\n"
