"""Reading a run's ``metrics.csv``: raw rows, rows of numbers, and one metric's series against
steps and tokens (no Lightning import: ``loki report`` reads it too)."""

from __future__ import annotations

import csv
import io
import math
import re
import time
from pathlib import Path

METRICS_FILE = "metrics.csv"
# `loki validate` and `loki test` log into <csv folder>/<command>-<UTC time>/, beside the training
# history; readers of the training history (the report) must not take those for it
_EVALUATION_LOG = re.compile(r"(validate|test)-\d{8}T\d{6}Z")


def evaluation_log_folder(command: str) -> str:
    """The folder name, beside the training run's ``metrics.csv``, of one evaluation's log."""
    return f"{command}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"


def is_evaluation_log(path: str | Path) -> bool:
    """Whether ``path`` lies in an evaluation's log folder (:func:`evaluation_log_folder`)."""
    return any(_EVALUATION_LOG.fullmatch(part) for part in Path(path).parts)


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
