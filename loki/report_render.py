"""How ``loki report`` shows its sections: the Markdown page and the PNG plots.

:func:`render` writes REPORT.md from the report dict alone, every value through :func:`cell`, so
the page never shows a number that report.json does not hold. :func:`draw_plots` draws loss and
batch size against tokens, KD win rates and the text kept per filter stage with matplotlib (the
``report`` extra), imported when the plots are drawn, into memory: ``loki report`` writes them
together with the page (``loki.atomic.write_all``).
"""

from __future__ import annotations

import io
from typing import Any

from loki._optional import require
from loki.metrics_csv import metric_series
from loki.report_sections import NOT_RUN

# --------------------------------------------------------------------------- plots
# the section each plot is shown under
PLOT_SECTION = {"loss_vs_tokens": "training", "batch_size_vs_tokens": "training",
                "kd_win_rate": "distillation", "kept_per_filter_stage": "filter"}


def draw_plots(report: dict[str, Any], rows: list[dict[str, float]] | None,
               filter_json: Any) -> dict[str, bytes]:
    """The plots as PNG bytes by file name; ``loki report`` writes them with the page."""
    mpl = require("matplotlib", "report")
    mpl.use("Agg")
    import matplotlib.pyplot as plt

    made: dict[str, bytes] = {}

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=110)
        plt.close(fig)
        made[name] = png.getvalue()

    if rows is not None and report["training"]["status"] == "ok":
        fig, ax = plt.subplots(figsize=(7, 4))
        train = metric_series(rows, "train/loss")
        ax.plot([t for _, t, _ in train], [v for _, _, v in train], lw=1, label="train/loss")
        val = metric_series(rows, "val/loss")
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
        series = metric_series(rows, key)
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
