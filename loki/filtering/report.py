"""The filter report: per stage documents and bytes in/out, time, reasons, removed examples.

Numbers come from datatrove's per-task stats files (``<work>/logs/<stage>/<job>/stats/*.json``),
summed over tasks, so a resumed run reports the same totals as an uninterrupted one.

Every row adds up: ``docs_in = docs_out + removed + replaced - added``, where ``removed`` sums the
per-document reasons (``dropped_*``, ``skipped_*``; a filter's unexplained ``dropped`` count is
named after its step, e.g. exact and near duplicates), ``replaced`` counts documents cut into
fragments and ``added`` the fragments written in their place (decontamination). Documents the
readers skip are a stage of their own (``read``), before cleaning. Decontamination also gets a
table per benchmark task and the list of frequent benchmark n-grams with their document counts.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from collections import Counter
from glob import glob

from loki import atomic

_REMOVAL = ("dropped_", "skipped_")
_COUNTERS = ("hits_", "sentences_", "task_", "boilerplate_lines", "contaminated_docs",
             "replaced_by_fragments", "fragments_written", "chars_removed", "exempted_matches",
             "frequent_ngrams", "indexed_ngrams")
# datatrove filters that count only a bare "dropped": the reason each removal stands for
_STEP_REASONS = {"exact-deduplication stage 3": "dropped_exact_duplicate",
                 "MinHash stage 4": "dropped_near_duplicate"}
TASK_COUNTERS = ("contaminated_docs", "replaced_by_fragments", "fragments_written",
                 "dropped_too_many_hits", "dropped_no_fragment_left", "chars_removed")


def _total(value) -> int:
    return value.get("total", 0) if isinstance(value, dict) else value


def _step_reason(name: str) -> str:
    bare = name.split(":", 1)[-1].strip()
    for key, reason in _STEP_REASONS.items():
        if key in bare:
            return reason
    return "dropped_" + (re.sub(r"[^0-9a-z]+", "_", bare.lower()).strip("_") or "filter")


def stage_stats(logging_dir: str) -> dict[str, Counter]:
    """Counters summed over every task's stats file: ``tally`` (the Tally steps), ``removed``
    (per-document removal reasons), ``counters`` (other stage counts), ``read`` (readers:
    documents yielded and lines/files skipped), ``guard`` (the input guard's skips) and
    ``tasks`` (``with_stats``: how many tasks wrote a stats file)."""
    out = {k: Counter() for k in ("tally", "removed", "counters", "read", "guard", "tasks")}
    for path in sorted(glob(os.path.join(logging_dir, "stats", "*.json"))):
        out["tasks"]["with_stats"] += 1
        with open(path) as f:
            steps = json.load(f)
        for step in steps:
            name, stats = step.get("name", ""), step.get("stats", {})
            if "TALLY" in name:
                out["tally"].update({k: _total(v) for k, v in stats.items()})
                continue
            if "READER" in name or "GUARD" in name:
                side = "read" if "READER" in name else "guard"
                out[side].update({k: _total(v) for k, v in stats.items()
                                  if k.startswith("skipped_") or k == "documents"})
                continue
            explained = 0
            for key, value in stats.items():
                if key.startswith(_REMOVAL):
                    out["removed"][key] += _total(value)
                    explained += _total(value) if key.startswith("dropped_") else 0
                elif key.startswith(_COUNTERS):
                    out["counters"][key] += _total(value)
            unexplained = _total(stats.get("dropped", 0)) - explained
            if unexplained > 0:
                out["removed"][_step_reason(name)] += unexplained
    return out


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


def _balance(row: dict) -> None:
    """Adds removed/replaced/added totals and whether the row adds up (rows that pass documents)."""
    if "docs_in" not in row:
        return
    c = row.get("counters", {})
    row["docs_removed"] = sum(row["reasons"].values())
    row["docs_replaced"] = c.get("replaced_by_fragments", 0)
    row["docs_added"] = c.get("fragments_written", 0)
    row["adds_up"] = row["docs_in"] == (row["docs_out"] + row["docs_removed"]
                                        + row["docs_replaced"] - row["docs_added"])


def _read_row(read: Counter, guard: Counter, docs_out: int) -> dict:
    """The readers and the input guard as a stage: what was read, what was skipped and why."""
    reasons = Counter({k: v for k, v in read.items() if k.startswith("skipped_")})
    reasons.update({k: v for k, v in guard.items() if k.startswith("skipped_")})
    # readers count the documents they yield; their skipped lines/files were never yielded
    row = {"stage": "read", "seconds": None,
           "docs_in": read["documents"] + sum(v for k, v in read.items() if k != "documents"),
           "docs_out": docs_out, "reasons": dict(sorted(reasons.items())), "counters": {},
           "removed_examples": []}
    _balance(row)
    return row


def _decontamination(work: str, rows: list[dict]) -> dict:
    counters = Counter()
    for row in rows:
        if row["stage"] == "decontam":
            counters = Counter(row.get("counters", {}))
    tasks: dict[str, dict[str, int]] = {}
    for key, value in counters.items():
        for suffix in TASK_COUNTERS:
            if key.startswith("task_") and key.endswith("_" + suffix):
                tasks.setdefault(key[5:-len(suffix) - 1], {})[suffix] = value
    for name, t in tasks.items():
        tasks[name] = {k: t.get(k, 0) for k in TASK_COUNTERS}
    out = {"tasks": dict(sorted(tasks.items())),
           "exempted_matches": counters.get("exempted_matches", 0)}
    index_path = os.path.join(work, "decontam", "index.npz")
    if os.path.exists(index_path):  # what each task put in the index (items, n-grams)
        import numpy as np

        with np.load(index_path) as data:
            out["index"] = json.loads(bytes(data["meta"]).decode())["stats"]
    path = os.path.join(work, "decontam", "frequent.json")
    if os.path.exists(path):
        with open(path) as f:
            freq = json.load(f)
        out["frequent_ngrams"] = {"corpus_docs": freq["corpus_docs"],
                                  "threshold_docs": freq["threshold"],
                                  "count": len(freq["frequent"]),
                                  "top": [{"ngram": r["ngram"], "docs": r["docs"]}
                                          for r in freq["frequent"][:50]]}
    return out


def tasks_done(work: str, stage) -> tuple[int, int]:
    """(tasks with a completion marker, tasks) over the stage's jobs."""
    done = sum(len(glob(os.path.join(work, "logs", stage.name, label, "completions", "*")))
               for label, _, _ in stage.jobs)
    return done, sum(tasks for _, _, tasks in stage.jobs)


def stage_rows(cfg, stage, timings: dict) -> list[dict]:
    """The stage's report row (after a ``read`` row for the clean stage, whose job reads the
    input). Document counts come from the job that writes the documents, once it has stats."""
    work = cfg.work_dir.rstrip("/")
    removed, counters, read, guard = (Counter() for _ in range(4))
    tally: dict[str, int] = {}
    for label, _, _ in stage.jobs:
        s = stage_stats(os.path.join(work, "logs", stage.name, label))
        removed += s["removed"]
        counters += s["counters"]
        read += s["read"]
        guard += s["guard"]
        if stage.output and label == stage.jobs[-1][0] and s["tasks"]:
            zero = dict.fromkeys(("docs_in", "docs_out", "bytes_in", "bytes_out"), 0)
            tally = {**zero, **s["tally"]}  # a stage that kept nothing counts a zero
    rows, row = [], {"stage": stage.name, "seconds": timings.get(stage.name)}
    if tally:
        row.update({k: tally[k] for k in ("docs_in", "docs_out", "bytes_in", "bytes_out")})
        if stage.name == "clean":
            rows.append(_read_row(read, guard, tally["docs_in"]))
    done, tasks = tasks_done(work, stage)
    if done < tasks:
        row["status"] = f"incomplete ({done} of {tasks} tasks)"
    row["reasons"] = dict(sorted(removed.items()))
    row["counters"] = dict(sorted(counters.items()))
    row["removed_examples"] = removed_examples(work, stage.name, cfg.report_examples)
    _balance(row)
    return [*rows, row]


def write_report(cfg, stages, timings: dict, reused: list[str] = ()) -> dict:
    """Writes ``<output_dir>/filter_report.json`` and ``.md``; returns the JSON dict, with the
    Markdown file's path under ``"path"``. ``reused``: the stages this run took from an earlier
    one (their seconds are that run's). A run with unfinished stages has published nothing yet:
    its report goes into work_dir, and the one in output_dir keeps describing the shards there."""
    work = cfg.work_dir.rstrip("/")
    rows = [row for stage in stages for row in stage_rows(cfg, stage, timings)]
    hits = {k[5:]: v for row in rows for k, v in row["counters"].items() if k.startswith("hits_")}
    report = {"output_dir": cfg.output_dir, "stages": rows, "benchmark_hits_per_task": hits,
              "decontamination": _decontamination(work, rows),
              "total_seconds": round(sum(v or 0 for v in timings.values()), 2),
              "incomplete": [r["stage"] for r in rows if "status" in r], "reused": list(reused)}
    folder = work if report["incomplete"] else cfg.output_dir
    md = os.path.join(folder, "filter_report.md")
    atomic.write_all({os.path.join(folder, "filter_report.json"): json.dumps(report, indent=1),
                      md: markdown(report)})  # the pair, the page last
    return {**report, "path": md}


def markdown(report: dict) -> str:
    lines = ["# Filter report", "", f"Output: `{report['output_dir']}` "
             f"(total {report['total_seconds']} s)", "",
             "in = out + removed + replaced - added (replaced: documents cut into fragments; "
             "added: the fragments)", "",
             "| stage | docs in | docs out | removed | replaced | added | adds up | bytes in "
             "| bytes out | seconds |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |"]
    for r in report["stages"]:
        cells = [r.get(k, "") for k in ("docs_in", "docs_out", "docs_removed", "docs_replaced",
                                        "docs_added")]
        ok = {True: "yes", False: "**no**"}.get(r.get("adds_up"), "")
        cells += [ok] + [r.get(k, "") for k in ("bytes_in", "bytes_out")]
        seconds = "" if r.get("seconds") is None else r["seconds"]
        name = r["stage"] + (f" ({r['status']})" if "status" in r else "")
        lines.append(f"| {name} | " + " | ".join(str(c) for c in cells) + f" | {seconds} |")
    if report.get("incomplete"):
        lines += ["", f"Incomplete: {', '.join(report['incomplete'])}. Their numbers count the "
                  "finished tasks only; run `loki filter report` again once the jobs have ended."]
    lines += ["", "## Benchmark hits per task", ""]
    lines += [f"- {t}: {n}" for t, n in report["benchmark_hits_per_task"].items()] or ["- none"]
    d = report.get("decontamination", {})
    lines += ["", "## Decontamination per benchmark task", "",
              "| task | contaminated docs | cut docs | fragments written | dropped docs "
              "| chars removed |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, t in d.get("tasks", {}).items():
        dropped = t["dropped_too_many_hits"] + t["dropped_no_fragment_left"]
        lines.append(f"| {name} | {t['contaminated_docs']} | {t['replaced_by_fragments']} | "
                     f"{t['fragments_written']} | {dropped} | {t['chars_removed']} |")
    lines += ["", "Index: " + ("; ".join(
        f"{name} {st.get('items', 0)} items, {st.get('ngrams', 0)} n-grams"
        for name, st in d.get("index", {}).items()) or "none")]
    freq = d.get("frequent_ngrams")
    if freq:
        lines += ["", f"Frequent benchmark n-grams (in more than {freq['threshold_docs']} of "
                  f"{freq['corpus_docs']} documents): {freq['count']}; exempt only where they "
                  f"matched alone ({d.get('exempted_matches', 0)} matches exempted).", ""]
        lines += [f"- `{r['ngram']}`: {r['docs']} docs" for r in freq["top"]]
    for r in report["stages"]:
        if not r["reasons"] and not r["removed_examples"] and not r.get("counters"):
            continue
        lines += ["", f"## {r['stage']}", ""]
        lines += [f"- {k}: {v}" for k, v in r["reasons"].items()]
        lines += [f"- {k}: {v}" for k, v in r.get("counters", {}).items()
                  if not k.startswith(("task_", "hits_"))]
        for ex in r["removed_examples"]:
            text = ex["text"].replace("\n", " ")
            lines.append(f"- removed ({ex['reason']}) `{ex['id']}`: {text}")
    return "\n".join(lines) + "\n"
