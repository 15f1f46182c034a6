"""``loki report``: one Markdown page and a few plots from what the pipeline stages wrote.

Every table in ``REPORT.md`` is rendered from ``report.json`` (written beside it) by one function,
so the page never shows a number the JSON does not hold. A stage whose artifact is missing gets
its section with "not run" and the path that was looked for; nothing is estimated in its place.

Artifacts read (defaults; each can be given explicitly, and a path given must exist):

- filter report: ``<data_root>/filtered/filter_report.json`` (``loki filter``)
- tokenizer prune report: ``<data_root>/tokenizer/prune_report.json`` (``loki tokenizer prune``)
- training metrics: the newest ``<run_dir>/**/metrics.csv`` (a CSVLogger next to the WandbLogger), not
  those of ``loki validate`` / ``loki test`` (``csv/<command>-<time>/``)
- rollback events: ``<run_dir>/**/rollback-events.jsonl`` (``LossSpikeRollback``), else the
  ``rollback/*`` columns of metrics.csv
- distillation: the ``distill/win_rate/<source>`` and ``distill/loss/<source>`` columns
- eval results: ``<run_dir>/eval/results.json`` (lm-eval's ``{"results": {task: {"acc,none":
  ...}}}`` layout, or ``{"rows": [{"task", "metric", "value", "stderr"}]}``), and the
  Table-1 Markdown ``<run_dir>/eval/results.md`` (linked)
- probes: ``<run_dir>/probes/probes.json`` (prompt/output records, optional ``summary``)
- trained vs step 0: ``<run_dir>/compare/compare.json`` (``loki compare``: paired bootstrap CIs)

Scores print as percentages (``51.5%``), times as seconds (``28.0 s``); report.json keeps the raw
numbers (fractions, seconds) and each table's ``formats`` says how a column is printed.

The sections are read in ``loki/report_sections.py`` (those from metrics.csv in
``loki/report_training.py``) and rendered in ``loki/report_render.py``;
this module finds the artifacts, writes REPORT.md, report.json and the plots, and is the command.
"""

from __future__ import annotations

import csv
import glob
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from loki import atomic
from loki.errors import LokiError
from loki.metrics_csv import is_evaluation_log, read_metrics, read_rows
from loki.output import check_writable
from loki.redact import redact
from loki.report_render import PLOT_SECTION, draw_plots, render
from loki.report_sections import (
    compare_section,
    eval_section,
    filter_section,
    load_json,
    probes_section,
    safe_section,
    tokenizer_section,
)
from loki.report_training import (
    distill_section,
    distill_summary,
    own_step_values,
    rollback_section,
    training_section,
)


@dataclass
class ReportConfig:
    """Where the run and the data live, and where the report goes. A path given here must
    exist; a default path that does not gives its section as "not run"."""

    run_dir: str = "runs/demo"
    """The run's folder (``default_root_dir`` of ``loki fit``; eval and probes write under it)."""
    data_root: str | None = None
    """The data folder holding ``filtered/`` and ``tokenizer/`` (default: data/demo)."""
    out: str | None = None
    """The Markdown file to write, a path ending in .md (default: ``<run_dir>/REPORT.md``);
    report.json and the plots are written into its folder."""
    filter_report: str | None = None
    """Filter report JSON (default: ``<data_root>/filtered/filter_report.json``)."""
    prune_report: str | None = None
    """Tokenizer prune report JSON (default: ``<data_root>/tokenizer/prune_report.json``)."""
    metrics_csv: str | None = None
    """CSVLogger metrics (default: the newest ``<run_dir>/**/metrics.csv`` of training, not of
    ``loki validate`` or ``loki test``)."""
    rollback_events: str | None = None
    """Rollback events JSONL (default: ``<run_dir>/**/rollback-events.jsonl``)."""
    eval_results: str | None = None
    """Eval results JSON (default: ``<run_dir>/eval/results.json``)."""
    table1_md: str | None = None
    """Table-1 Markdown written by ``loki eval``, linked from the page (default:
    ``<run_dir>/eval/results.md``)."""
    probes: str | None = None
    """Probe outputs JSON (default: ``<run_dir>/probes/probes.json``)."""
    compare: str | None = None
    """``loki compare`` of the step-0 and trained checkpoints (default:
    ``<run_dir>/compare/compare.json``)."""
    max_samples: int = 12
    """Probe samples shown in the report."""


DEFAULT_DATA_ROOT = "data/demo"
_FILES = ("filter_report", "prune_report", "metrics_csv", "rollback_events", "eval_results",
          "table1_md", "probes", "compare")


def check_paths(cfg: ReportConfig) -> Path:
    """The Markdown file to write, after refusing (one line, before anything is written) the
    paths given that do not exist and an ``out`` that is not a Markdown file name."""
    if cfg.out is None and not Path(cfg.run_dir).is_dir():  # a typo must not make a folder
        raise LokiError(f"run folder {cfg.run_dir} not found; give --run_dir the folder of the "
                        "run (loki fit's trainer.default_root_dir), or --out for a report "
                        "without one")
    missing = [f"--{key} {getattr(cfg, key)}" for key in _FILES
               if getattr(cfg, key) is not None and not Path(getattr(cfg, key)).is_file()]
    if cfg.data_root is not None and not Path(cfg.data_root).is_dir():
        missing.insert(0, f"--data_root {cfg.data_root} (a folder)")
    if missing:
        raise LokiError(f"not found: {'; '.join(missing)}. Fix the path, or leave the option out "
                        "to use its default (a missing default gives a \"not run\" section)")
    if cfg.metrics_csv is not None and "step" not in read_rows(cfg.metrics_csv)[0]:
        raise LokiError(f"--metrics_csv {cfg.metrics_csv} is not a training metrics file (it has "
                        "no step column); give the metrics.csv of a loki fit run "
                        "(<run folder>/csv/metrics.csv)")
    if cfg.out is None:
        return Path(cfg.run_dir) / "REPORT.md"
    out = Path(cfg.out)
    if out.is_dir():
        raise LokiError(f"--out {out} is a folder; give the Markdown file to write, e.g. "
                        f"--out {out / 'REPORT.md'} (report.json and the plots go beside it)")
    if out.suffix.lower() != ".md":
        instead = out.with_suffix(".md") if out.suffix else out / "REPORT.md"
        raise LokiError(f"--out {out} is not a Markdown file name; give a path ending in .md, "
                        f"e.g. --out {instead} (report.json and the plots go beside it)")
    check_writable(out.parent, "--out folder")
    return out


# --------------------------------------------------------------------------- paths
def _newest(pattern: str) -> str | None:
    # `loki demo --redo [fit]` moves an earlier run under <run_dir>/archive/: never read from it
    # and the logs of `loki validate` / `loki test` are not the training history
    found = [p for p in glob.glob(pattern, recursive=True)
             if "archive" not in Path(p).parts and not is_evaluation_log(p)]
    return max(found, key=os.path.getmtime) if found else None


def resolve_paths(cfg: ReportConfig) -> dict[str, str | None]:
    run, data = cfg.run_dir, cfg.data_root or DEFAULT_DATA_ROOT
    return {
        "filter_report": cfg.filter_report or f"{data}/filtered/filter_report.json",
        "prune_report": cfg.prune_report or f"{data}/tokenizer/prune_report.json",
        "metrics_csv": cfg.metrics_csv or _newest(f"{run}/**/metrics.csv"),
        "rollback_events": cfg.rollback_events or _newest(f"{run}/**/rollback-events.jsonl"),
        "eval_results": cfg.eval_results or f"{run}/eval/results.json",
        "table1_md": cfg.table1_md or f"{run}/eval/results.md",
        "probes": cfg.probes or f"{run}/probes/probes.json",
        "compare": cfg.compare or f"{run}/compare/compare.json",
    }


def build_report(run_dir: str | Path = "runs/demo", data_root: str | Path | None = None,
                 out: str | Path | None = None, **paths: Any) -> dict[str, Any]:
    """Write REPORT.md, report.json and the PNGs; returns the report dict."""
    cfg = ReportConfig(run_dir=str(run_dir), data_root=None if data_root is None else str(data_root),
                       out=None if out is None else str(out), **paths)
    out_md = check_paths(cfg)
    found = resolve_paths(cfg)
    rows, metrics_err, repeats = None, None, None
    if found["metrics_csv"] and os.path.isfile(found["metrics_csv"]):
        try:
            rows = read_metrics(found["metrics_csv"])
        except (OSError, csv.Error) as err:
            metrics_err = f"cannot read {found['metrics_csv']}: {err}"
        else:
            every_n = (distill_summary(found["metrics_csv"]) or {}).get("every_n_batches")
            rows, repeats = own_step_values(rows, every_n)
    sections = {
        "filter": safe_section(filter_section, found["filter_report"]),
        "tokenizer": safe_section(tokenizer_section, found["prune_report"]),
        "training": safe_section(training_section, rows, metrics_err or found["metrics_csv"]),
        "rollbacks": safe_section(rollback_section, found["rollback_events"], rows),
        "distillation": safe_section(distill_section, rows, found["metrics_csv"]),
        "eval": safe_section(eval_section, found["eval_results"], found["table1_md"]),
        "compare": safe_section(compare_section, found["compare"]),
        "probes": safe_section(probes_section, found["probes"], cfg.max_samples),
    }
    for key in ("training", "distillation"):
        if repeats and sections[key]["status"] == "ok":
            sections[key]["note"] = " ".join(filter(None, [repeats + ".",
                                                           sections[key].get("note")]))
    report: dict[str, Any] = {"run_dir": cfg.run_dir, "config": asdict(cfg), "artifacts": found,
                              "sections": sections}
    hf_export = Path(cfg.run_dir) / "hf"
    report["hf_export"] = str(hf_export) if (hf_export / "loki_export.json").is_file() else None
    view = {"training": sections["training"], "rollbacks": sections["rollbacks"],
            "distillation": sections["distillation"], "filter": sections["filter"],
            "tokenizer": sections["tokenizer"]}
    plots = draw_plots(view, rows, load_json(found["filter_report"])[0])
    report["plots"] = {name.removesuffix(".png"): name for name in plots}
    report["plot_sections"] = {k: PLOT_SECTION[k] for k in report["plots"]}
    # one set: the page last, and a full disk leaves the earlier report as it was
    atomic.write_all({**{out_md.parent / name: png for name, png in plots.items()},
                      out_md.parent / "report.json": json.dumps(redact(report), indent=1,
                                                                default=str),
                      out_md: render(report)})
    return report


def main(argv: list[str] | None = None) -> None:
    from jsonargparse import ActionConfigFile

    from loki.tool_parser import tool_parser

    parser = tool_parser(prog="loki report", description=__doc__.split("\n")[0])
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
