"""``ResumableCSVLogger``: one ``metrics.csv`` per run, continued across resumes and kills.

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when it starts (so a resume erases
the earlier history) and writes rows every 100 steps (so a kill loses up to 100 steps). This
logger keeps one history for the run folder instead:

- on a resume, the rows logged at or after the checkpoint's step are done again and logged
  again: they move to ``metrics.replaced-<UTC time>.csv`` beside it (never deleted), so the
  file has no duplicate and no missing step (only the trailing ones move: the discarded steps
  of a rollback before them are history);
- every ``log_metrics`` call (one per ``log_every_n_steps``) appends its rows and flushes, so a
  kill loses at most the last logging interval; a row cut short by a kill is dropped on reading;
- a change of columns rewrites the file atomically (``loki.atomic``), never in place;
- a fresh run (no checkpoint) into a folder that holds an earlier history moves that file aside
  as ``metrics.replaced-<UTC time>.csv`` before its first row, rather than deleting it;
- nothing on disk changes (``metrics.csv`` and ``hparams.yaml`` as they were) until the run
  logs its first row, or ends successfully: a fit refused or failed before it changes nothing.

``LokiCLI`` tells the logger where the run continues (``resume_at``); used on its own, it drops
the rows from the first step it logs on.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.fabric.utilities.logger import _add_prefix
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from loki import atomic
from loki.metrics_csv import METRICS_FILE, read_rows
from loki.redact import plain, redact

log = logging.getLogger(__name__)
NEW_RUN = 0  # resume_at(NEW_RUN): a fresh run, the earlier history is moved aside


def _step(row: dict[str, str]) -> float:
    try:
        return float(row.get("step", "nan"))
    except ValueError:
        return float("nan")


def _split_redone(rows: list[dict[str, str]], cut: float | None
                  ) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(rows kept, rows the resumed run logs again): the trailing rows at or after step ``cut``.

    Only the tail after the last row below ``cut`` is redone. A loss-spike rollback puts the step
    axis back, so the rows of the discarded steps and the rollback's own row sit before the
    replayed ones with steps at or after a later checkpoint's: they are history, not redone."""
    if cut is None:
        return rows, []
    start = len(rows)
    while start and not _step(rows[start - 1]) < cut:  # NaN (no step): part of the tail
        start -= 1
    tail = rows[start:]
    return rows[:start] + [r for r in tail if not _step(r) >= cut], \
        [r for r in tail if _step(r) >= cut]


class _ResumableWriter(ExperimentWriter):
    """``ExperimentWriter`` that continues the file it finds instead of deleting it."""

    def __init__(self, log_dir: str, resume_step: int | None) -> None:
        # The parent's __init__ deletes an existing metrics.csv: set the fields it would.
        self.metrics: list[dict[str, Any]] = []
        self.metrics_keys: list[str] = []
        self.hparams: dict[str, Any] = {}
        self.log_dir = log_dir
        self.metrics_file_path = os.path.join(log_dir, METRICS_FILE)
        self.resume_step = resume_step
        self._started = False
        self._fs = get_filesystem(log_dir)
        os.makedirs(log_dir, exist_ok=True)

    def log_hparams(self, params: dict[str, Any]) -> None:
        self.hparams.update(params)
        if self._started:
            self._write_hparams()

    def _write_hparams(self) -> None:
        import yaml

        safe = redact(plain(self.hparams))
        atomic.write_text(os.path.join(self.log_dir, self.NAME_HPARAMS_FILE),
                          yaml.safe_dump(safe, sort_keys=False))

    def start(self) -> None:
        """The run has begun writing: continue, trim or set aside the history on disk, and
        write ``hparams.yaml``. Called by the first save with rows (or a successful end)."""
        if self._started:
            return
        self._started = True
        os.makedirs(self.log_dir, exist_ok=True)
        if self.hparams:
            self._write_hparams()
        path = self.metrics_file_path
        header, rows = read_rows(path)
        if not os.path.exists(path):
            return
        if self.resume_step == NEW_RUN and rows:
            aside = self._aside()
            os.replace(path, aside)
            log.warning("a new run (no checkpoint) in %s: the earlier %s moved to %s",
                        self.log_dir, METRICS_FILE, aside)
            return
        cut = self.resume_step
        if cut is None:  # not told where the run continues: from the first step logged now
            cut = min((m["step"] for m in self.metrics), default=None)
        keep, redone = _split_redone(rows, cut)
        self.metrics_keys = header
        if redone:
            aside = self._aside()
            with atomic.atomic_write(aside, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=header)
                writer.writeheader()
                writer.writerows(redone)
            log.info("resumed at step %s: the %d rows logged from there on moved to %s",
                     cut, len(redone), aside)
        if redone or open(path, "rb").read()[-1:] not in (b"\n", b""):
            self._rewrite(header, keep)

    def _aside(self) -> str:
        name = time.strftime("metrics.replaced-%Y%m%dT%H%M%SZ", time.gmtime())
        aside, n = os.path.join(self.log_dir, f"{name}.csv"), 1
        while os.path.exists(aside):  # two replacements in one second keep both
            aside, n = os.path.join(self.log_dir, f"{name}-{n}.csv"), n + 1
        return aside

    def _rewrite(self, header: list[str], rows: list[dict[str, Any]]) -> None:
        with atomic.atomic_write(self.metrics_file_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=header)
            writer.writeheader()
            writer.writerows(rows)

    def save(self) -> None:
        if not self.metrics:
            return
        self.start()
        keys = set().union(*self.metrics) - set(self.metrics_keys)
        if keys or not os.path.exists(self.metrics_file_path):
            self.metrics_keys = sorted(set(self.metrics_keys) | keys)
            _, old = read_rows(self.metrics_file_path)
            self._rewrite(self.metrics_keys, [*old, *self.metrics])
        else:
            with open(self.metrics_file_path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.metrics_keys).writerows(self.metrics)
                f.flush()
        self.metrics = []


class ResumableCSVLogger(CSVLogger):
    def __init__(self, save_dir: str, name: str | None = "csv", version: int | str | None = "",
                 prefix: str = "", flush_logs_every_n_steps: int = 1) -> None:
        """CSV metrics that survive resumes and kills (one ``metrics.csv`` per run folder).

        Args:
            save_dir: the run folder; metrics go to ``<save_dir>/<name>/<version>/metrics.csv``.
            name: subfolder name.
            version: subfolder under ``name`` ("" = none: one folder, continued across resumes).
            prefix: put at the beginning of metric keys.
            flush_logs_every_n_steps: write to disk every this many logging calls (1: every
                ``log_every_n_steps``, so a kill loses at most one logging interval).
        """
        super().__init__(save_dir, name=name, version=version, prefix=prefix,
                         flush_logs_every_n_steps=flush_logs_every_n_steps)
        self._resume_step: int | None = None
        self._calls = 0

    def resume_at(self, step: int | None) -> None:
        """The run continues at logging step ``step`` (``NEW_RUN``: a fresh run): the trailing
        rows at or after it are set aside before the first new row is written."""
        self._resume_step = step
        if self._experiment is not None:
            self._experiment.resume_step = step

    @property
    @rank_zero_experiment
    def experiment(self) -> _ResumableWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ResumableWriter(self.log_dir, self._resume_step)
        return self._experiment

    @rank_zero_only
    def finalize(self, status: str) -> None:
        # A run that ends well has begun even without a row; a failed one that logged none
        # leaves the folder as it found it.
        if self._experiment is not None and status == "success":
            self._experiment.start()
        super().finalize(status)

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        # Lightning's version flushes on (step + 1) % n; count calls instead, so n = 1 flushes
        # at every logging interval whatever the interval is.
        metrics = _add_prefix(metrics, self._prefix, self.LOGGER_JOIN_CHAR)
        if step is None:
            step = len(self.experiment.metrics)
        self.experiment.log_metrics(metrics, step)
        self._calls += 1
        if self._calls % self._flush_logs_every_n_steps == 0:
            self.save()
