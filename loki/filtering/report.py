"""The filter report: per stage documents and bytes in/out, time, reasons, removed examples.

Numbers come from datatrove's per-task stats files (``<work>/logs/<stage>/<job>/stats/*.json``),
summed over tasks, so a resumed run reports the same totals as an uninterrupted one.
"""

from __future__ import annotations

import gzip
import json
import os
from collections import Counter
from glob import glob

_KEEP_KEYS = ("skipped_", "dropped_", "hits_", "sentences_")


def stage_stats(logging_dir: str) -> tuple[Counter, Counter]:
    """(counters of the Tally steps, other reason counters) summed over every task's stats file."""
    tally, reasons = Counter(), Counter()
    for path in sorted(glob(os.path.join(logging_dir, "stats", "*.json"))):
        with open(path) as f:
            steps = json.load(f)
        for step in steps:
            for key, value in step.get("stats", {}).items():
                total = value.get("total", 0) if isinstance(value, dict) else value
                if "TALLY" in step.get("name", ""):
                    tally[key] += total
                elif key.startswith(_KEEP_KEYS) or key in ("boilerplate_lines",
                                                           "ignored_common_ngrams"):
                    reasons[key] += total
    return tally, reasons


def removed_examples(work: str, stage: str, k: int, max_chars: int = 300) -> list[dict]:
    out = []
    for path in sorted(glob(os.path.join(work, "removed", stage, "*.jsonl.gz"))):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                text = row.get("text", "")
                out.append({"id": row.get("id"), "reason": row.get("metadata", {}).get(
                    "filter_reason") or stage, "text": text[:max_chars] + ("…" if len(text) > max_chars else "")})
                if len(out) >= k:
                    return out
    return out


def write_report(cfg, stages, timings: dict) -> dict:
    """Writes ``<output_dir>/filter_report.json`` and ``.md``; returns the JSON dict."""
    work = cfg.work_dir.rstrip("/")
    rows = []
    for stage in stages:
        tally, reasons = Counter(), Counter()
        for label, _, _ in stage.jobs:
            t, r = stage_stats(os.path.join(work, "logs", stage.name, label))
            if t:
                tally = t  # the job with tallies is the one that writes the stage's documents
            reasons += r
        row = {"stage": stage.name, "seconds": timings.get(stage.name)}
        if tally:
            row.update(docs_in=tally["docs_in"], docs_out=tally["docs_out"],
                       bytes_in=tally["bytes_in"], bytes_out=tally["bytes_out"])
        row["reasons"] = dict(sorted(reasons.items()))
        row["removed_examples"] = removed_examples(work, stage.name, cfg.report_examples)
        rows.append(row)
    hits = {k[5:]: v for row in rows for k, v in row["reasons"].items() if k.startswith("hits_")}
    report = {"output_dir": cfg.output_dir, "stages": rows, "benchmark_hits_per_task": hits,
              "total_seconds": round(sum(v or 0 for v in timings.values()), 2)}
    os.makedirs(cfg.output_dir, exist_ok=True)
    with open(os.path.join(cfg.output_dir, "filter_report.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(cfg.output_dir, "filter_report.md"), "w") as f:
        f.write(markdown(report))
    return report


def markdown(report: dict) -> str:
    lines = ["# Filter report", "", f"Output: `{report['output_dir']}` "
             f"(total {report['total_seconds']} s)", "",
             "| stage | docs in | docs out | bytes in | bytes out | seconds |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in report["stages"]:
        cells = [r.get(k, "") for k in ("docs_in", "docs_out", "bytes_in", "bytes_out")]
        lines.append(f"| {r['stage']} | " + " | ".join(str(c) for c in cells)
                     + f" | {r.get('seconds', '')} |")
    lines += ["", "## Benchmark hits per task", ""]
    lines += [f"- {t}: {n}" for t, n in report["benchmark_hits_per_task"].items()] or ["- none"]
    for r in report["stages"]:
        if not r["reasons"] and not r["removed_examples"]:
            continue
        lines += ["", f"## {r['stage']}", ""]
        lines += [f"- {k}: {v}" for k, v in r["reasons"].items()]
        for ex in r["removed_examples"]:
            text = ex["text"].replace("\n", " ")
            lines.append(f"- removed ({ex['reason']}) `{ex['id']}`: {text}")
    return "\n".join(lines) + "\n"
