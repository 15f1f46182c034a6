"""The summary under ``benchmarks/gpu_step.py``'s table: ratios between its rows, each set
against its target, and the helpers that format the table's cells (a row's graph breaks among
them) and read ``--only``.
"""

from __future__ import annotations

import re

from gpu_fit import FITS
from torch._dynamo.utils import counters


def split_names(text: str) -> list[str]:
    """``--only``'s names: commas inside a row's parentheses do not split ("fit-fp8(a,b),fit")."""
    return [name for name in re.split(r",(?![^()]*\))", text) if name]


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def gib(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def graph_report() -> dict:
    """What torch.compile made of the row: its graphs, and its graph breaks by reason (each
    break splits a compiled block or model, losing fusions and adding a call per step)."""
    return {"graphs": int(counters["stats"].get("unique_graphs", 0)),
            "graph_breaks": dict(counters["graph_break"])}


def breaks_note(breaks: dict) -> str:
    if not breaks:
        return ""
    reason, _ = max(breaks.items(), key=lambda kv: kv[1])
    n = sum(breaks.values())
    return f"  ({n} graph break{'s' * (n != 1)}, most: {reason.splitlines()[0][:80]})"


def print_summary(rows: list[dict]) -> None:
    """The measured rows against each other and against their targets (rows that were skipped
    or not run print nothing)."""
    tps = {r["variant"]: r["tokens_per_s"] for r in rows if "tokens_per_s" in r}

    def first(prefix: str) -> float | None:
        return next((v for k, v in tps.items() if k.startswith(prefix)), None)

    blocks = first("loki-compiled(blocks")
    bf16 = [v for k, v in tps.items() if k.startswith("loki") and "fp8" not in k]
    fp8 = [v for k, v in tps.items() if k.startswith("loki-fp8")]
    if fp8 and blocks:
        print(f"fp8 (best) / bf16 compiled blocks: {max(fp8) / blocks:.2f}x  (target >= 1.35x)")
    if bf16 and "llama-sdpa" in tps:
        print(f"loki (best bf16) / llama-sdpa: {max(bf16) / tps['llama-sdpa']:.2f}x  "
              "(target >= 1.4x)")
    for attn in ("sdpa", "flash"):
        if f"loki-{attn}" in tps and f"llama-{attn}" in tps:
            print(f"loki-{attn} / llama-{attn} (both eager): "
                  f"{tps[f'loki-{attn}'] / tps[f'llama-{attn}']:.2f}x")
    flex_flash = tps.get("loki-compiled(blocks,flex-flash)")
    if flex_flash and blocks:
        print(f"flex-flash / flex (compiled blocks): {flex_flash / blocks:.2f}x")
    fits_bf16 = [label for label in FITS if not label.startswith("fit-fp8")]
    for label in fits_bf16:  # each option of the fit path against the recipe as shipped
        if label != "fit" and label in tps and "fit" in tps:
            print(f"{label} / fit: {tps[label] / tps['fit']:.2f}x")
    fit_fp8 = {k: v for k, v in tps.items() if k.startswith("fit-fp8")}
    if fit_fp8 and "fit" in tps:
        print("fit fp8 / bf16: " + ", ".join(f"{k[8:-1]} {v / tps['fit']:.2f}x"
                                              for k, v in fit_fp8.items()))
    if "fit" in tps and blocks:
        print(f"Lightning fit / raw loop (compiled blocks): {tps['fit'] / blocks:.3f}x  "
              "(target: within 3%)")
    fit_mfu = {r["variant"]: r["mfu"] for r in rows if r["variant"] in fits_bf16 and r.get("mfu")}
    if fit_mfu:
        best = max(fit_mfu, key=fit_mfu.get)
        print(f"fit bf16 MFU, best: {100 * fit_mfu[best]:.1f}% ({best})  (target >= 52%)")
    model = first("loki-compiled(model")
    if model and blocks:
        print(f"compile scope model / blocks: {model / blocks:.2f}x")
