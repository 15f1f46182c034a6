"""The training sections of ``loki report``, read from a run's metrics.csv: losses, rollbacks
and distillation (win rates by source).

A row of metrics.csv holds what was measured at its step (``loki.step_logging``): ``train/loss``
on plain LM steps, ``train/distill_loss`` and ``distill/*`` on distillation steps, so counting
the rows that hold a column counts the logged steps of that kind. Files written before that rule
carry both in every row after the first distillation step, one of them repeated from an earlier
step: :func:`own_step_values` leaves the repeated ones out, by the distillation schedule kept in
``distill_summary.json`` beside metrics.csv (step s distils when (s + 1) % every_n == 0).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from loki.metrics_csv import metric_series
from loki.report_sections import load_json, make_table, not_run

DISTILL_LOSS = "train/distill_loss"


def _is_distill_value(key: str) -> bool:
    return key == DISTILL_LOSS or key.startswith("distill/")


def distill_summary(metrics_path: str | None) -> dict[str, Any] | None:
    """The ``distill_summary.json`` that ``TeacherDistillation`` writes beside metrics.csv."""
    if not metrics_path:
        return None
    summary, _ = load_json(str(Path(metrics_path).parent / "distill_summary.json"))
    return summary if isinstance(summary, dict) else None


def own_step_values(rows: list[dict[str, float]], every_n: int | None
                    ) -> tuple[list[dict[str, float]], str | None]:
    """(rows, note): each row keeps only the values of its own step's kind. Rows that carry both
    ``train/loss`` and ``train/distill_loss`` come from a metrics.csv written before rows held
    only their own step's values; the note says what was done with them."""
    mixed = [i for i, r in enumerate(rows) if "train/loss" in r and DISTILL_LOSS in r]
    if not mixed:
        return rows, None
    said = (f"{len(mixed)} rows of metrics.csv carry both train/loss and {DISTILL_LOSS}, one of "
            "them repeated from an earlier step (a file written before each row held only its "
            "own step's values)")
    if not every_n:
        return rows, (said + "; without distill_summary.json the distillation schedule is "
                      "unknown, so the counts and losses below include repeated values")
    rows = list(rows)
    for i in mixed:
        distils = (int(rows[i]["step"]) + 1) % every_n == 0
        rows[i] = {k: v for k, v in rows[i].items()
                   if (k != "train/loss" if distils else not _is_distill_value(k))}
    return rows, (said + f"; the repeated values were left out by the distillation schedule "
                  f"(every {every_n}th step, from distill_summary.json)")


def training_section(rows: list[dict[str, float]] | None, path: str | None) -> dict[str, Any]:
    if rows is None:
        return not_run(f"no metrics.csv ({path or 'nothing found under the run dir'}); attach "
                       "a CSVLogger to `loki fit`")
    train = metric_series(rows, "train/loss")
    if not train:
        return not_run(f"{path} has no train/loss column")
    val = metric_series(rows, "val/loss")
    ppl = metric_series(rows, "val/ppl")
    tokens = [int(r["trainer/tokens_seen"]) for r in rows if "trainer/tokens_seen" in r]
    items = [("LM steps logged (rows with train/loss)", len(train)),
             (f"distillation steps logged (rows with {DISTILL_LOSS})",
              sum(DISTILL_LOSS in r for r in rows)),
             ("tokens seen (max)", max(tokens, default=None)),
             ("first train loss", train[0][2]), ("last train loss", train[-1][2]),
             ("min train loss", min(v for _, _, v in train)),
             ("last val loss", val[-1][2] if val else None),
             ("last val perplexity", ppl[-1][2] if ppl else None)]
    return {"status": "ok", "source": path,
            "table": make_table(["item", "value"], [[k, v] for k, v in items])}
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
        return {"status": "ok", "source": events_path, "table": make_table(cols, table),
                "events": [{k: v for k, v in e.items() if k != "skipped_samples"}
                           | {"skipped_samples": len(e.get("skipped_samples", []))}
                           for e in events]}
    if rows is None:
        return not_run("no rollback-events.jsonl and no metrics.csv")
    spikes = metric_series(rows, "rollback/spike_step")
    if not any("rollback/count" in r for r in rows) and not spikes:
        return not_run("LossSpikeRollback was not attached (no rollback/* metrics)")
    targets = metric_series(rows, "rollback/target_step")
    table = [[i + 1, s[2], s[1], None, t[2], None, None, "from metrics.csv"]
             for i, (s, t) in enumerate(zip(spikes, targets, strict=False))]
    out = {"status": "ok", "source": "metrics.csv rollback/* columns",
           "table": make_table(cols, table), "events": [{"spike_tokens": s[1]} for s in spikes]}
    if not spikes:
        watched = sum("rollback/count" in r for r in rows)
        out["note"] = (f"No rollback: LossSpikeRollback was attached (rollback/count in {watched} "
                       "logged rows) and found no loss spike.")
    return out


def distill_section(rows: list[dict[str, float]] | None, path: str | None) -> dict[str, Any]:
    if rows is None:
        return not_run("no metrics.csv")
    prefix = "distill/win_rate/"
    sources = sorted({k[len(prefix):] for r in rows for k in r if k.startswith(prefix)})
    if not sources:
        return not_run(f"no {prefix}<source> columns in {path}: distillation did not run")
    # win rates are per step; weight each logged step by its sample count
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
               "table": make_table(["source", "win rate", "mean candidate loss",
                                    "distillation steps logged"], table, {"win rate": "fraction"})}
    summary = distill_summary(path) or {}
    if isinstance(summary.get("distill_steps"), int):
        logged = max(r[-1] for r in table)
        section["note"] = (f"{summary['distill_steps']} distillation steps ran "
                           f"(distill_summary.json): the first table reads the {logged} of them "
                           "that were logged, the second holds the totals over all of them.")
    by_scoring = _win_rates_by_scoring(summary)
    if by_scoring is not None:
        section["summary"] = by_scoring
    return section


def _win_rates_by_scoring(summary: dict[str, Any]) -> dict[str, Any] | None:
    """Win rate by source under both scorings, from the ``distill_summary.json`` that
    ``TeacherDistillation`` writes next to metrics.csv: "ce" compares every candidate by the
    student's CE per byte (like for like); "kl" lets soft-target positions score KL instead."""
    sources = summary.get("sources") or {}
    if not sources or "win_rate_ce" not in next(iter(sources.values())):
        return None
    chosen = summary.get("selection", "ce")
    ce = f"win rate, CE per byte{' (selected)' if chosen == 'ce' else ''}"
    kl = f"win rate, KL on soft targets{' (selected)' if chosen == 'kl' else ''}"
    return make_table(["source", ce, kl, "candidates"],
                      [[name, s.get("win_rate_ce"), s.get("win_rate_kl"), s.get("candidates")]
                       for name, s in sources.items()], {ce: "fraction", kl: "fraction"})
