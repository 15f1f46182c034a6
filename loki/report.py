"""``loki report``: one Markdown page and a few plots from what the pipeline stages wrote.

Every table in ``REPORT.md`` is rendered from ``report.json`` (written beside it) by one function,
so the page never shows a number the JSON does not hold. A stage whose artifact is missing gets
its section with "not run" and the path that was looked for; nothing is estimated in its place.

Artifacts read (defaults; each can be given explicitly):

- filter report: ``<data_root>/filtered/filter_report.json`` (``loki filter``)
- tokenizer prune report: ``<data_root>/tokenizer/prune_report.json`` (``loki tokenizer prune``)
- training metrics: the newest ``<run_dir>/**/metrics.csv`` (a CSVLogger next to the WandbLogger)
- rollback events: ``<run_dir>/**/rollback-events.jsonl`` (``LossSpikeRollback``), else the
  ``rollback/*`` columns of metrics.csv
- distillation: the ``distill/win_rate/<source>`` and ``distill/loss/<source>`` columns
- eval results: ``<run_dir>/eval/results.json`` (lm-eval's ``{"results": {task: {"acc,none":
  ...}}}`` layout, or ``{"rows": [{"task", "metric", "value", "stderr"}]}``), and the
  Table-1 Markdown ``<run_dir>/eval/table1.md`` (linked)
- probes: ``<run_dir>/probes/probes.json`` (prompt/output records, optional ``summary``)
- trained vs step 0: ``<run_dir>/compare/compare.json`` (``loki compare``: paired bootstrap CIs)

Scores print as percentages (``51.5%``), times as seconds (``28.0 s``); report.json keeps the raw
numbers (fractions, seconds) and each table's ``formats`` says how a column is printed.
"""

from __future__ import annotations

import csv
import glob
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from loki._optional import require
from loki.metrics_csv import read_rows
from loki.redact import redact

NOT_RUN = "not run"
_OUTPUT_KEYS = ("output", "completion", "generation", "response", "text")


@dataclass
class ReportConfig:
    """Where the run and the data live, and where the report goes."""

    run_dir: str = "runs/demo"
    """The run's folder (``default_root_dir`` of ``loki fit``; eval and probes write under it)."""
    data_root: str = "data/demo"
    """The data folder holding ``filtered/`` and ``tokenizer/``."""
    out: str | None = None
    """Markdown file to write (default: ``<run_dir>/REPORT.md``); plots and report.json beside."""
    filter_report: str | None = None
    """Filter report JSON (default: ``<data_root>/filtered/filter_report.json``)."""
    prune_report: str | None = None
    """Tokenizer prune report JSON (default: ``<data_root>/tokenizer/prune_report.json``)."""
    metrics_csv: str | None = None
    """CSVLogger metrics (default: the newest ``<run_dir>/**/metrics.csv``)."""
    rollback_events: str | None = None
    """Rollback events JSONL (default: ``<run_dir>/**/rollback-events.jsonl``)."""
    eval_results: str | None = None
    """Eval results JSON (default: ``<run_dir>/eval/results.json``)."""
    table1_md: str | None = None
    """Table-1 Markdown written by ``loki eval`` (default: ``<run_dir>/eval/table1.md``)."""
    probes: str | None = None
    """Probe outputs JSON (default: ``<run_dir>/probes/probes.json``)."""
    compare: str | None = None
    """``loki compare`` of the step-0 and trained checkpoints (default:
    ``<run_dir>/compare/compare.json``)."""
    max_samples: int = 12
    """Probe samples shown in the report."""


# --------------------------------------------------------------------------- reading
def _newest(pattern: str) -> str | None:
    # `loki demo --redo [fit]` moves an earlier run under <run_dir>/archive/: never read from it
    found = [p for p in glob.glob(pattern, recursive=True)
             if "archive" not in Path(p).parts]
    return max(found, key=os.path.getmtime) if found else None


def resolve_paths(cfg: ReportConfig) -> dict[str, str | None]:
    run, data = cfg.run_dir, cfg.data_root
    return {
        "filter_report": cfg.filter_report or f"{data}/filtered/filter_report.json",
        "prune_report": cfg.prune_report or f"{data}/tokenizer/prune_report.json",
        "metrics_csv": cfg.metrics_csv or _newest(f"{run}/**/metrics.csv"),
        "rollback_events": cfg.rollback_events or _newest(f"{run}/**/rollback-events.jsonl"),
        "eval_results": cfg.eval_results or f"{run}/eval/results.json",
        "table1_md": cfg.table1_md or f"{run}/eval/table1.md",
        "probes": cfg.probes or f"{run}/probes/probes.json",
        "compare": cfg.compare or f"{run}/compare/compare.json",
    }


def _load_json(path: str | None) -> tuple[Any, str | None]:
    """(data, None) or (None, why it could not be read)."""
    if not path or not os.path.isfile(path):
        return None, f"no file at {path or '(nothing found)'}"
    try:
        with open(path) as f:
            return json.load(f), None
    except (OSError, json.JSONDecodeError) as err:
        return None, f"cannot read {path}: {err}"


def read_metrics(path: str) -> list[dict[str, float]]:
    """Metrics rows as {column: float} with the empty cells left out."""
    rows = []
    for raw in read_rows(path)[1]:  # the whole history, less a last row cut short by a kill
        row = {}
        for k, v in raw.items():
            try:
                row[k] = float(v)
            except (TypeError, ValueError):
                continue
        rows.append(row)
    return rows


def _series(rows: list[dict[str, float]], key: str) -> list[tuple[float, float, float]]:
    """(step, tokens, value) for ``key``; rows without tokens (validation) take the tokens of the
    last training row at or before their step."""
    out, tokens = [], 0.0
    for row in rows:
        if "trainer/tokens_seen" in row:
            tokens = row["trainer/tokens_seen"]
        if key in row:
            out.append((row.get("step", math.nan), row.get("trainer/tokens_seen", tokens),
                        row[key]))
    return out


# --------------------------------------------------------------------------- sections
def _table(columns: list[str], rows: list[list[Any]],
           formats: dict[str, str] | None = None) -> dict[str, Any]:
    """A table; ``formats`` maps a column to how :func:`cell` prints it."""
    return {"columns": columns, "rows": rows, "formats": formats or {}}


def _not_run(reason: str) -> dict[str, Any]:
    return {"status": NOT_RUN, "reason": reason}


def filter_section(path: str | None) -> dict[str, Any]:
    report, err = _load_json(path)
    if err:
        return _not_run(f"filter report missing ({err}); run `loki filter`")
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
            shown = len(s.get("removed_examples") or [])
            note = (f"{n} contaminated documents: {dropped} dropped, the rest cut around the "
                    f"matches" + (f" ({shown} shown below)" if shown else ""))
            contaminated += [[ex.get("id"), ex.get("reason"), ex.get("text")]
                             for ex in s.get("removed_examples") or []]
        rows.append([s["stage"], din, dout, s.get("bytes_in"), s.get("bytes_out"), kept,
                     s.get("seconds"), note])
    hits = report.get("benchmark_hits_per_task", {})
    out = {"status": "ok", "source": path,
           "table": _table(["stage", "docs in", "docs out", "bytes in", "bytes out",
                            "docs kept", "time", "note"], rows,
                           {"docs kept": "percent", "time": "seconds"}),
           "hits": _table(["task", "13-gram hits"], [[k, v] for k, v in hits.items()])}
    if contaminated:
        out["contaminated"] = _table(["contaminated document", "action", "benchmark text found"],
                                     contaminated)
    return out


def tokenizer_section(path: str | None) -> dict[str, Any]:
    r, err = _load_json(path)
    if err:
        return _not_run(f"tokenizer prune report missing ({err}); run `loki tokenizer prune`")
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
            "table": _table(["item", "value"], [[k, v] for k, v in items]),
            "bytes_per_token": bpt.get("pruned")}


def training_section(rows: list[dict[str, float]] | None, path: str | None) -> dict[str, Any]:
    if rows is None:
        return _not_run(f"no metrics.csv ({path or 'nothing found under the run dir'}); attach "
                        "a CSVLogger to `loki fit`")
    train = _series(rows, "train/loss")
    if not train:
        return _not_run(f"{path} has no train/loss column")
    val = _series(rows, "val/loss")
    ppl = _series(rows, "val/ppl")
    tokens = [int(r["trainer/tokens_seen"]) for r in rows if "trainer/tokens_seen" in r]
    items = [("LM steps logged", len(train)), ("tokens seen (max)", max(tokens, default=None)),
             ("first train loss", train[0][2]), ("last train loss", train[-1][2]),
             ("min train loss", min(v for _, _, v in train)),
             ("last val loss", val[-1][2] if val else None),
             ("last val perplexity", ppl[-1][2] if ppl else None)]
    return {"status": "ok", "source": path,
            "table": _table(["item", "value"], [[k, v] for k, v in items])}


def rollback_section(events_path: str | None, rows: list[dict[str, float]] | None
                     ) -> dict[str, Any]:
    cols = ["rollback", "spike step", "spike tokens", "loss", "to step", "to tokens", "seed",
            "reason"]
    if events_path and os.path.isfile(events_path):
        events = []
        with open(events_path) as f:
            for line in f:
                if line.strip():
                    events.append(json.loads(line))
        table = [[e.get("rollback"), e.get("spike_step"), e.get("spike_tokens"), e.get("loss"),
                  e.get("target_step"), e.get("target_tokens"), e.get("seed"), e.get("reason")]
                 for e in events]
        return {"status": "ok", "source": events_path, "table": _table(cols, table),
                "events": [{k: v for k, v in e.items() if k != "skipped_samples"}
                           | {"skipped_samples": len(e.get("skipped_samples", []))}
                           for e in events]}
    if rows is None:
        return _not_run("no rollback-events.jsonl and no metrics.csv")
    spikes = _series(rows, "rollback/spike_step")
    if not any("rollback/count" in r for r in rows) and not spikes:
        return _not_run("LossSpikeRollback was not attached (no rollback/* metrics)")
    targets = _series(rows, "rollback/target_step")
    table = [[i + 1, s[2], s[1], None, t[2], None, None, "from metrics.csv"]
             for i, (s, t) in enumerate(zip(spikes, targets, strict=False))]
    return {"status": "ok", "source": "metrics.csv rollback/* columns",
            "table": _table(cols, table),
            "events": [{"spike_tokens": s[1]} for s in spikes]}


def distill_section(rows: list[dict[str, float]] | None, path: str | None) -> dict[str, Any]:
    if rows is None:
        return _not_run("no metrics.csv")
    prefix = "distill/win_rate/"
    sources = sorted({k[len(prefix):] for r in rows for k in r if k.startswith(prefix)})
    if not sources:
        return _not_run(f"no {prefix}<source> columns in {path}: distillation did not run")
    # win rates are per step; weight each step by its sample count when it was logged
    table = []
    for src in sources:
        num = den = loss_sum = 0.0
        steps = 0
        for r in rows:
            if prefix + src not in r:
                continue
            w = r.get("distill/samples", 1.0)
            num += w * r[prefix + src]
            den += w
            loss_sum += r.get(f"distill/loss/{src}", math.nan)
            steps += 1
        table.append([src, num / den if den else None,
                      loss_sum / steps if steps and not math.isnan(loss_sum) else None, steps])
    section = {"status": "ok", "source": path,
               "table": _table(["source", "win rate", "mean candidate loss", "logged rows"], table,
                               {"win rate": "fraction"})}
    by_scoring = _win_rates_by_scoring(path)
    if by_scoring is not None:
        section["summary"] = by_scoring
    return section


def _win_rates_by_scoring(metrics_path: str | None) -> dict[str, Any] | None:
    """Win rate by source under both scorings, from the ``distill_summary.json`` that
    ``TeacherDistillation`` writes next to metrics.csv: "ce" compares every candidate by the
    student's CE per byte (like for like); "kl" lets soft-target positions score KL instead."""
    if not metrics_path:
        return None
    summary, _ = _load_json(str(Path(metrics_path).parent / "distill_summary.json"))
    sources = (summary or {}).get("sources") or {}
    if not sources or "win_rate_ce" not in next(iter(sources.values())):
        return None
    chosen = summary.get("selection", "ce")
    ce = f"win rate, CE per byte{' (selected)' if chosen == 'ce' else ''}"
    kl = f"win rate, KL on soft targets{' (selected)' if chosen == 'kl' else ''}"
    return _table(["source", ce, kl, "candidates"],
                  [[name, s.get("win_rate_ce"), s.get("win_rate_kl"), s.get("candidates")]
                   for name, s in sources.items()], {ce: "fraction", kl: "fraction"})


def _eval_rows(results: dict[str, Any]) -> list[list[Any]]:
    if isinstance(results.get("rows"), dict):  # what OneShotBenchmarkEval / loki eval write
        return [[label, r.get("metric"), r.get("value"), r.get("stderr")]
                for label, r in results["rows"].items()]
    if isinstance(results.get("rows"), list):
        return [[r.get("task"), r.get("metric"), r.get("value"), r.get("stderr")]
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
    results, err = _load_json(path)
    if err:
        return _not_run(f"eval results missing ({err}); run `loki eval`")
    rows = _eval_rows(results)
    if not rows:
        return _not_run(f"{path} holds no task scores")
    values = [r[2] for r in rows if isinstance(r[2], int | float)]
    average = results.get("average", sum(values) / len(values) if values else None)
    from loki.eval.presets import chance

    tasks = {label: r.get("task", label) for label, r in results["rows"].items()} if isinstance(
        results.get("rows"), dict) else {}
    rows = [[*r, chance(tasks.get(r[0], r[0]))] for r in rows]
    out = {"status": "ok", "source": path,
           "table": _table(["task", "metric", "score", "stderr", "chance"], rows,
                           {"score": "fraction", "stderr": "fraction", "chance": "fraction"}),
           "average": average}
    if table1 and os.path.isfile(table1):
        out["table1_md"] = table1
    return out


def probes_section(path: str | None, max_samples: int) -> dict[str, Any]:
    data, err = _load_json(path)
    if err:
        return _not_run(f"probe outputs missing ({err}); run `loki probe`")
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
           "table": _table(["probe", "prompt", "output"], samples[:max_samples])}
    if isinstance(summary, dict):
        out["summary"] = _table(["item", "value"], [[k, v] for k, v in summary.items()
                                                     if not isinstance(v, dict | list)])
    return out


def compare_section(path: str | None) -> dict[str, Any]:
    """The trained model against its step-0 checkpoint, per task, from ``loki compare``."""
    data, err = _load_json(path)
    if err:
        return _not_run(f"no comparison with the step-0 checkpoint ({err}); run `loki compare "
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
            "table": _table(["task", "items", "chance", "step 0 (A)", "trained (B)",
                             "B − A (points)", f"{pct} CI (points)", "p"], rows,
                            {"chance": "fraction", "step 0 (A)": "fraction",
                             "trained (B)": "fraction", "B − A (points)": "points",
                             "p": "p"}),
            "note": "Same items for both checkpoints; the interval is a paired bootstrap over "
                    "items (an interval that excludes 0 is a change beyond item-sampling noise)."}


def _presets() -> list[list[Any]]:
    from loki.eval.presets import PRESETS

    return list(PRESETS.values())


# --------------------------------------------------------------------------- plots
def _plots(report: dict[str, Any], rows: list[dict[str, float]] | None,
           filter_json: Any, out_dir: Path) -> dict[str, str]:
    mpl = require("matplotlib", "report")
    mpl.use("Agg")
    import matplotlib.pyplot as plt

    made: dict[str, str] = {}

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        made[name.removesuffix(".png")] = name

    if rows is not None and report["training"]["status"] == "ok":
        fig, ax = plt.subplots(figsize=(7, 4))
        train = _series(rows, "train/loss")
        ax.plot([t for _, t, _ in train], [v for _, _, v in train], lw=1, label="train/loss")
        val = _series(rows, "val/loss")
        if val:
            ax.plot([t for _, t, _ in val], [v for _, _, v in val], "o-", label="val/loss")
        for i, e in enumerate(report["rollbacks"].get("events", [])):
            if e.get("spike_tokens") is not None:
                ax.axvline(e["spike_tokens"], color="red", ls="--", lw=1,
                           label="rollback (spike)" if i == 0 else None)
        ax.set(xlabel="tokens seen", ylabel="loss", title="Loss vs tokens")
        ax.legend()
        save(fig, "loss_vs_tokens.png")

        key = ("batch/sequences" if any("batch/sequences" in r for r in rows)
               else "train/micro_batches")
        series = _series(rows, key)
        if series:
            fig, ax = plt.subplots(figsize=(7, 3.5))
            ax.step([t for _, t, _ in series], [v for _, _, v in series], where="post")
            ylabel = ("sequences per step" if key == "batch/sequences"
                      else "micro-batches per step")
            ax.set(xlabel="tokens seen", ylabel=ylabel, title="Batch size vs tokens")
            save(fig, "batch_size_vs_tokens.png")

    if report["distillation"]["status"] == "ok":
        table = report["distillation"]["table"]["rows"]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.bar([r[0] for r in table], [r[1] or 0.0 for r in table])
        ax.set(ylabel="win rate", ylim=(0, 1), title="KD win rate by source")
        save(fig, "kd_win_rate.png")

    if report["filter"]["status"] == "ok":
        stages = [s for s in filter_json.get("stages", []) if s.get("bytes_out") is not None]
        if stages:
            fig, ax = plt.subplots(figsize=(7, 3.5))
            ax.bar([s["stage"] for s in stages], [s["bytes_out"] for s in stages])
            bpt = report["tokenizer"].get("bytes_per_token")
            ax.set(ylabel="bytes kept", title="Text kept per filter stage")
            if bpt:  # the tokenizer's measured bytes/token, not a guess
                sec = ax.secondary_yaxis("right", functions=(lambda b: b / bpt,
                                                             lambda t: t * bpt))
                sec.set_ylabel(f"tokens kept (at {bpt:.2f} bytes/token)")
            ax.tick_params(axis="x", rotation=30)
            save(fig, "kept_per_filter_stage.png")
    return made


# --------------------------------------------------------------------------- markdown
def cell(value: Any, fmt: str | None = None) -> str:
    """How a table value is printed (the test reads REPORT.md back through this). ``fmt``:
    ``fraction`` (0.515 -> 51.5%), ``percent`` (51.5 -> 51.5%), ``points`` (0.05 -> +5.0),
    ``seconds`` (27.98 -> 28.0 s), ``p`` (three decimals); other floats get four significant
    digits."""
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value).replace("|", "\\|").replace("\n", " ")
    if fmt == "fraction":
        return f"{100 * value:.1f}%"
    if fmt == "percent":
        return f"{value:.1f}%"
    if fmt == "points":
        return f"{100 * value:+.1f}"
    if fmt == "seconds":
        return f"{value:.1f} s"
    if fmt == "p":
        return f"{value:.3f}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(table: dict[str, Any]) -> list[str]:
    if not table["rows"]:
        return ["(no rows)"]
    formats = [table.get("formats", {}).get(c) for c in table["columns"]]
    lines = ["| " + " | ".join(table["columns"]) + " |",
             "| " + " | ".join("---" for _ in table["columns"]) + " |"]
    lines += ["| " + " | ".join(cell(v, f) for v, f in zip(row, formats, strict=False)) + " |"
              for row in table["rows"]]
    return lines


TITLES = {"filter": "Filter", "tokenizer": "Tokenizer", "training": "Training",
          "rollbacks": "Loss-spike rollbacks", "distillation": "Distillation (KD win rates)",
          "eval": "Evaluation (Table-1 style)",
          "compare": "Trained model against its step-0 checkpoint",
          "probes": "Probes and samples"}


def render(report: dict[str, Any]) -> str:
    lines = [f"# LokiLM run report: `{report['run_dir']}`", "",
             "Every table below is rendered from `report.json` in this folder.", ""]
    if report.get("hf_export"):
        lines += [f"Hugging Face export (`loki export hf`): `{report['hf_export']}`, loads with "
                  "`AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)`", ""]
    for key, title in TITLES.items():
        sec = report["sections"][key]
        lines += [f"## {title}", ""]
        if sec["status"] != "ok":
            lines += [f"**{NOT_RUN}**: {sec['reason']}", ""]
            continue
        lines += [f"Source: `{sec['source']}`", ""] + markdown_table(sec["table"]) + [""]
        for extra in ("hits", "contaminated", "summary"):
            if extra in sec:
                lines += markdown_table(sec[extra]) + [""]
        if sec.get("note"):
            lines += [sec["note"], ""]
        if sec.get("average") is not None:
            lines += [f"Average over the rows above: {cell(sec['average'], 'fraction')}", ""]
        if "table1_md" in sec:
            lines += [f"Table 1 as written by `loki eval`: `{sec['table1_md']}`", ""]
        for plot, name in report["plots"].items():
            if report["plot_sections"][plot] == key:
                lines += [f"![{plot}]({name})", ""]
    return "\n".join(lines)


_PLOT_SECTION = {"loss_vs_tokens": "training", "batch_size_vs_tokens": "training",
                 "kd_win_rate": "distillation", "kept_per_filter_stage": "filter"}


def _safe(section: Any, *args: Any) -> dict[str, Any]:
    """A section, or "not run" naming the error when its artifact has an unexpected layout (the
    report is the last stage of the demo: one odd file must not hide the others)."""
    try:
        return section(*args)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        return _not_run(f"{section.__name__.removesuffix('_section')} artifact has an "
                        f"unexpected layout ({type(err).__name__}: {err})")


def build_report(run_dir: str | Path = "runs/demo", data_root: str | Path = "data/demo",
                 out: str | Path | None = None, **paths: Any) -> dict[str, Any]:
    """Write REPORT.md, report.json and the PNGs; returns the report dict."""
    cfg = ReportConfig(run_dir=str(run_dir), data_root=str(data_root),
                       out=None if out is None else str(out), **paths)
    found = resolve_paths(cfg)
    out_md = Path(cfg.out or f"{cfg.run_dir}/REPORT.md")
    out_md.parent.mkdir(parents=True, exist_ok=True)
    rows, metrics_err = None, None
    if found["metrics_csv"] and os.path.isfile(found["metrics_csv"]):
        try:
            rows = read_metrics(found["metrics_csv"])
        except (OSError, csv.Error) as err:
            metrics_err = f"cannot read {found['metrics_csv']}: {err}"
    sections = {
        "filter": _safe(filter_section, found["filter_report"]),
        "tokenizer": _safe(tokenizer_section, found["prune_report"]),
        "training": _safe(training_section, rows, metrics_err or found["metrics_csv"]),
        "rollbacks": _safe(rollback_section, found["rollback_events"], rows),
        "distillation": _safe(distill_section, rows, found["metrics_csv"]),
        "eval": _safe(eval_section, found["eval_results"], found["table1_md"]),
        "compare": _safe(compare_section, found["compare"]),
        "probes": _safe(probes_section, found["probes"], cfg.max_samples),
    }
    report: dict[str, Any] = {"run_dir": cfg.run_dir, "config": asdict(cfg), "artifacts": found,
                              "sections": sections}
    hf_export = Path(cfg.run_dir) / "hf"
    report["hf_export"] = str(hf_export) if (hf_export / "loki_export.json").is_file() else None
    view = {"training": sections["training"], "rollbacks": sections["rollbacks"],
            "distillation": sections["distillation"], "filter": sections["filter"],
            "tokenizer": sections["tokenizer"]}
    report["plots"] = _plots(view, rows, _load_json(found["filter_report"])[0], out_md.parent)
    report["plot_sections"] = {k: _PLOT_SECTION[k] for k in report["plots"]}
    (out_md.parent / "report.json").write_text(json.dumps(redact(report), indent=1, default=str))
    out_md.write_text(render(report))
    return report


def main(argv: list[str] | None = None) -> None:
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(prog="loki report", description=__doc__.split("\n")[0])
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_class_arguments(ReportConfig, as_group=False)
    args = parser.parse_args(argv)
    kw = {k: v for k, v in vars(args).items() if k in ReportConfig.__dataclass_fields__}
    report = build_report(**kw)
    done = [k for k, s in report["sections"].items() if s["status"] == "ok"]
    missing = [k for k, s in report["sections"].items() if s["status"] != "ok"]
    out = kw.get("out") or f"{kw['run_dir']}/REPORT.md"
    print(f"report: {out} ({len(report['plots'])} plots; sections: {', '.join(done) or 'none'}"
          + (f"; not run: {', '.join(missing)}" if missing else "") + ")")
