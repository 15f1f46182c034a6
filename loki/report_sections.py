"""The sections of ``loki report``: each pipeline stage's artifact read into tables (the
training, rollback and distillation sections, read from metrics.csv, are in
``loki/report_training.py``).

A section is ``{"status": "ok", "source": <path>, "table": ...}`` plus what its stage adds (a
second table, a note, an average), or ``{"status": "not run", "reason": ...}`` naming the file
that was looked for. A table is ``{"columns", "rows", "formats"}``: rows hold the raw numbers
(fractions, seconds) and ``formats`` says how ``loki/report_render.py`` prints a column. Nothing
here writes a file or estimates a number that an artifact does not hold.
"""

from __future__ import annotations

import json
import os
from typing import Any

NOT_RUN = "not run"
_OUTPUT_KEYS = ("output", "completion", "generation", "response", "text")


# --------------------------------------------------------------------------- reading
def load_json(path: str | None) -> tuple[Any, str | None]:
    """(data, None) or (None, why it could not be read)."""
    if not path or not os.path.isfile(path):
        return None, f"no file at {path or '(nothing found)'}"
    try:
        with open(path) as f:
            return json.load(f), None
    except (OSError, json.JSONDecodeError) as err:
        return None, f"cannot read {path}: {err}"


# --------------------------------------------------------------------------- sections
def make_table(columns: list[str], rows: list[list[Any]],
               formats: dict[str, str] | None = None) -> dict[str, Any]:
    """A table; ``formats`` maps a column to how :func:`loki.report_render.cell` prints it."""
    return {"columns": columns, "rows": rows, "formats": formats or {}}


def not_run(reason: str) -> dict[str, Any]:
    return {"status": NOT_RUN, "reason": reason}


def filter_section(path: str | None) -> dict[str, Any]:
    report, err = load_json(path)
    if err:
        return not_run(f"filter report missing ({err}); run `loki filter`")
    rows, contaminated = [], []
    for s in report.get("stages", []):
        din, dout = s.get("docs_in"), s.get("docs_out")
        kept = round(100.0 * dout / din, 2) if din else None
        reasons = s.get("reasons") or {}
        counts = {**reasons, **(s.get("counters") or {})}  # the decontam stage counts in both
        note = None
        if "contaminated_docs" in counts or s["stage"] == "decontam":
            n = counts.get("contaminated_docs", 0)
            dropped = counts.get("dropped_too_many_hits", 0) + counts.get(
                "dropped_no_fragment_left", 0)
            cut = counts.get("replaced_by_fragments", n - dropped)
            shown = len(s.get("removed_examples") or [])
            note = (f"{n} contaminated documents" + (f" ({shown} shown below)" if shown else "")
                    + f": {dropped} dropped, {cut} cut around the matches")
            if "fragments_written" in counts:  # docs out counts each surviving fragment
                note += f" into {counts['fragments_written']} fragments, each a document out"
            contaminated += [[ex.get("id"), ex.get("reason"), ex.get("text")]
                             for ex in s.get("removed_examples") or []]
        rows.append([s["stage"], din, dout, s.get("bytes_in"), s.get("bytes_out"), kept,
                     s.get("seconds"), note])
    hits = report.get("benchmark_hits_per_task", {})
    out = {"status": "ok", "source": path,
           "table": make_table(["stage", "docs in", "docs out", "bytes in", "bytes out",
                            "docs kept", "time", "note"], rows,
                           {"docs kept": "percent", "time": "seconds"}),
           "hits": make_table(["task", "13-gram hits"], [[k, v] for k, v in hits.items()])}
    if contaminated:
        out["contaminated"] = make_table(["contaminated document", "action", "benchmark text found"],
                                     contaminated)
    return out


def tokenizer_section(path: str | None) -> dict[str, Any]:
    r, err = load_json(path)
    if err:
        return not_run(f"tokenizer prune report missing ({err}); run `loki tokenizer prune`")
    bpt = r.get("bytes_per_token_held_out", {})
    items = [("vocab size", r.get("vocab_size")), ("base", r.get("base")),
             ("vocab hash", r.get("vocab_hash")), ("corpus bytes", r.get("corpus_bytes")),
             ("corpus documents", r.get("corpus_docs")),
             ("distinct base tokens used", r.get("distinct_tokens_used")),
             ("kept though unused (BPE parents)", r.get("kept_unused")),
             ("filled without usage", r.get("filled_unranked")),
             ("bytes/token held-out, base", bpt.get("base")),
             ("bytes/token held-out, pruned", bpt.get("pruned")),
             ("pruned/base bytes-per-token ratio", bpt.get("ratio"))]
    return {"status": "ok", "source": path,
            "table": make_table(["item", "value"], [[k, v] for k, v in items]),
            "bytes_per_token": bpt.get("pruned")}


def _eval_rows(results: dict[str, Any]) -> list[list[Any]]:
    from loki.eval.table import metric_name

    if isinstance(results.get("rows"), dict):  # what OneShotBenchmarkEval / loki eval write
        return [[label, metric_name(str(r.get("metric"))), r.get("value"), r.get("stderr")]
                for label, r in results["rows"].items()]
    if isinstance(results.get("rows"), list):
        return [[r.get("task"), metric_name(str(r.get("metric"))), r.get("value"), r.get("stderr")]
                for r in results["rows"]]
    out = []
    for task, metrics in sorted(results.get("results", {}).items()):
        for key, value in sorted(metrics.items()):
            name = key.split(",")[0]
            if "_stderr" in name or not isinstance(value, int | float) or isinstance(value, bool):
                continue
            stderr = metrics.get(key.replace(name, f"{name}_stderr", 1))
            out.append([task, name, value, stderr if isinstance(stderr, int | float) else None])
    return out


def eval_section(path: str | None, table1: str | None) -> dict[str, Any]:
    results, err = load_json(path)
    if err:
        return not_run(f"eval results missing ({err}); run `loki eval`")
    rows = _eval_rows(results)
    if not rows:
        return not_run(f"{path} holds no task scores")
    values = [r[2] for r in rows if isinstance(r[2], int | float)]
    average = results.get("average", sum(values) / len(values) if values else None)
    from loki.eval.presets import chance

    tasks = {label: r.get("task", label) for label, r in results["rows"].items()} if isinstance(
        results.get("rows"), dict) else {}
    rows = [[*r, chance(tasks.get(r[0], r[0]))] for r in rows]
    out = {"status": "ok", "source": path,
           "table": make_table(["task", "metric", "score", "stderr", "chance"], rows,
                           {"score": "fraction", "stderr": "fraction", "chance": "fraction"}),
           "average": average}
    if table1 and os.path.isfile(table1):
        out["table1_md"] = table1
    return out


def probes_section(path: str | None, max_samples: int) -> dict[str, Any]:
    data, err = load_json(path)
    if err:
        return not_run(f"probe outputs missing ({err}); run `loki probe`")
    if isinstance(data, dict) and isinstance(data.get("prompts"), dict):
        # loki probe: {name: {"prompt", "samples": [...]}} plus the bias template's orderings
        records = [{"name": name, "prompt": r.get("prompt"), "output": (r.get("samples") or [""])[0]}
                   for name, r in data["prompts"].items()]
        bias = data.get("bias") or {}
        records += [{"name": "bias: " + "/".join(o.get("occupations", [])) + " "
                     + "/".join(o.get("pronouns", [])), "prompt": o.get("prompt"),
                     "output": f"resolved: {o.get('resolved')} "
                               f"(stereotype-consistent: {o.get('stereotype_consistent')})"}
                    for o in bias.get("orderings", [])]
        if "stereotype_consistent_share" in bias:
            data = {**data, "summary": {"bias: stereotype-consistent share":
                                        bias["stereotype_consistent_share"]}}
    else:
        records = data if isinstance(data, list) else next(
            (v for k, v in data.items() if isinstance(v, list) and v and isinstance(v[0], dict)
             and "prompt" in v[0]), [])
    samples = []
    for r in records:
        if isinstance(r, dict) and "prompt" in r:
            text = next((r[k] for k in _OUTPUT_KEYS if isinstance(r.get(k), str)), None)
            if text is not None:
                samples.append([r.get("name", r.get("id", len(samples))), r["prompt"], text])
    summary = data.get("summary") if isinstance(data, dict) else None
    out = {"status": "ok", "source": path,
           "table": make_table(["probe", "prompt", "output"], samples[:max_samples])}
    if isinstance(summary, dict):
        out["summary"] = make_table(["item", "value"], [[k, v] for k, v in summary.items()
                                                     if not isinstance(v, dict | list)])
    return out


def compare_section(path: str | None) -> dict[str, Any]:
    """The trained model against its step-0 checkpoint, per task, from ``loki compare``."""
    data, err = load_json(path)
    if err:
        return not_run(f"no comparison with the step-0 checkpoint ({err}); run `loki compare "
                        "--a <step-0.ckpt> --b <last.ckpt>`")
    from loki.eval.presets import chance

    labels = {r.label: r.task for rows in _presets() for r in rows}
    rows = []
    for label, r in data["tasks"].items():
        ci = f"[{100 * r['ci_low']:+.1f}, {100 * r['ci_high']:+.1f}]"
        rows.append([label, r["n"], chance(labels.get(label, label)), r["mean_a"], r["mean_b"],
                     r["diff"], ci, r["p_value"]])
    pct = f"{r['confidence']:.0%}" if rows else "95%"
    return {"status": "ok", "source": path,
            "table": make_table(["task", "items", "chance", "step 0 (A)", "trained (B)",
                             "B − A (points)", f"{pct} CI (points)", "p"], rows,
                            {"chance": "fraction", "step 0 (A)": "fraction",
                             "trained (B)": "fraction", "B − A (points)": "points",
                             "p": "p"}),
            "note": "Same items for both checkpoints; the interval is a paired bootstrap over "
                    "items (an interval that excludes 0 is a change beyond item-sampling noise)."}


def _presets() -> list[list[Any]]:
    from loki.eval.presets import PRESETS

    return list(PRESETS.values())


def safe_section(section: Any, *args: Any) -> dict[str, Any]:
    """A section, or "not run" naming the error when its artifact has an unexpected layout (the
    report is the last stage of the demo: one odd file must not hide the others)."""
    try:
        return section(*args)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        return not_run(f"{section.__name__.removesuffix('_section')} artifact has an "
                        f"unexpected layout ({type(err).__name__}: {err})")
