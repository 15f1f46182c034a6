"""Reading a run's ``metrics.csv`` (no Lightning import: ``loki report`` reads it too)."""

from __future__ import annotations

import csv
import io

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
