"""Reading a run's ``metrics.csv``: raw rows, rows of numbers, and one metric's series against
steps and tokens (no Lightning import: ``loki report`` reads it too)."""

from __future__ import annotations

import csv
import io
import math

METRICS_FILE = "metrics.csv"


def read_rows(path: str) -> tuple[list[str], list[dict[str, str]]]:
    """(header, rows) of a metrics.csv; a last line cut short by a kill is left out."""
    try:
        with open(path, newline="") as f:
            text = f.read()
    except FileNotFoundError:
        return [], []
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    reader = csv.DictReader(io.StringIO(text))
    header = list(reader.fieldnames or [])
    rows = [r for r in reader if None not in r and None not in r.values()]
    return header, rows


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


def metric_series(rows: list[dict[str, float]], key: str) -> list[tuple[float, float, float]]:
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
