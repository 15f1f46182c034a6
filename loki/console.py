"""The quiet console of ``loki demo``, ``loki filter``, ``loki fit`` and ``loki distill build``.

A researcher watching a run wants the project's own lines (one per stage, with its figures) and a
progress bar, not every library's banner. Inside :func:`quiet_console` the process's stdout and
stderr file descriptors point at a log file, so everything a library writes (Python ``logging``
handlers, ``warnings``, datatrove's loguru sinks, which it re-adds on ``sys.stderr`` for every
task, and messages printed from C/C++) lands there, while :func:`say` and the progress bars of
``callbacks.console_progress`` write to the terminal. ``verbose=True`` leaves every stream where
it was.

Warnings known to be harmless are silenced where they arise (:func:`_silence_known_harmless`),
each with the reason, so that ``--verbose`` shows what is worth reading.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

_terminal: TextIO | None = None
_muted = False


def stream() -> TextIO:
    """Where the project's own lines and progress bars go: the terminal inside a quiet console,
    ``sys.stdout`` otherwise."""
    return _terminal if _terminal is not None else sys.stdout


def say(line: str = "") -> None:
    """A line of the command's own output: on the terminal, or in the log inside :func:`muted`."""
    print(line, file=sys.stdout if _muted else stream(), flush=True)


def process_rank() -> int:
    """This process's rank in a distributed run (0 outside one): the rank Lightning has set once
    it runs, else the launcher's variables (torchrun's RANK, SLURM's SLURM_PROCID, LOCAL_RANK of
    the ranks Lightning starts itself)."""
    lightning_ranks = sys.modules.get("lightning.fabric.utilities.rank_zero")
    rank = getattr(getattr(lightning_ranks, "rank_zero_only", None), "rank", None)
    if rank is None:
        keys = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")
        rank = next((int(os.environ[k]) for k in keys if os.environ.get(k, "").isdigit()), 0)
    return int(rank)


def is_rank_zero() -> bool:
    """Whether this process is rank 0 of a distributed run, or not part of one."""
    return process_rank() == 0


@contextmanager
def muted() -> Iterator[None]:
    """Send :func:`say` lines to wherever stdout goes (the log in a quiet console), leaving the
    progress bars on the terminal: ``loki demo`` shows one line per stage, not the lines of the
    commands it runs."""
    global _muted
    before, _muted = _muted, True
    try:
        yield
    finally:
        _muted = before


def nested() -> bool:
    """True while another command's console decides where output goes: inside a quiet console,
    or in a stage of ``loki demo`` (muted, also with ``--verbose true``)."""
    return _terminal is not None or _muted


def _silence_known_harmless() -> None:
    # Lightning advises a checkpoint callback with `every_n_train_steps` under manual
    # optimization (with a 12-line code sample); LokiLM steps its optimizer itself and the demo's
    # ModelCheckpoint already saves by step, so the advice does not apply.
    warnings.filterwarnings("ignore", message=r".*manual optimization.*", module="lightning")
    # The token stream has no length for Lightning; the run is bounded by max_steps.
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    # lm-eval runs outside a git checkout in installed copies and says so on every call.
    warnings.filterwarnings("ignore", message=r".*git.*", module="lm_eval")
    transformers_without_torchao()


def transformers_without_torchao() -> None:
    """transformers imports torchao whenever it is installed (for its torchao quantizer), and
    torchao then reports its CUDA-only kernels as failing to load and registers deprecated
    pytree constants. The HF teachers and MiniLM never use torchao quantization, so tell
    transformers it is absent; the project imports torchao itself only where FP8 or the torchao
    8-bit optimizer is used (``loki.precision``). Must run before ``transformers.quantizers``
    is imported; later it changes nothing."""
    if "transformers.quantizers" in sys.modules:
        return
    try:
        import transformers.utils as tu
        import transformers.utils.import_utils as iu
    except ImportError:
        return

    def absent(*args: object, **kwargs: object) -> bool:
        return False

    iu.is_torchao_available = tu.is_torchao_available = absent


def _stream_handlers(streams: tuple[TextIO, ...]) -> dict[logging.StreamHandler, TextIO]:
    """Logging handlers (of any logger) that write to one of ``streams``, with that stream."""
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    return {h: h.stream for lg in loggers for h in lg.handlers
            if type(h) is logging.StreamHandler and h.stream in streams}


@contextmanager
def quiet_console(log_path: str | Path, verbose: bool = False,
                  title: str | None = None) -> Iterator[Path]:
    """Send library output to ``log_path`` (appended) for the duration; re-entrant (an inner
    call, e.g. ``loki demo`` running ``loki tokenize``, keeps the outer log, or the terminal of a
    verbose demo: see :func:`nested`)."""
    global _terminal
    log_path = Path(log_path)
    _silence_known_harmless()
    if verbose or nested():
        yield log_path
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    log = open(log_path, "a", buffering=1)  # noqa: SIM115 - closed in finally
    log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} {title or ''}\n")
    log.flush()
    saved = os.dup(1), os.dup(2)
    _terminal = open(os.dup(saved[0]), "w", buffering=1, closefd=True)  # noqa: SIM115
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    # Python-level streams too: sys.stdout/sys.stderr may not be the file descriptors (pytest,
    # notebooks), and logging handlers keep the stream they were made with (Lightning's at import)
    streams = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = log
    handlers = _stream_handlers(streams)
    for handler in handlers:
        handler.setStream(log)
    # warnings through logging into the log, whoever installed warnings.showwarning before
    py_warnings = logging.getLogger("py.warnings")
    to_log = logging.StreamHandler(log)
    was_propagating = py_warnings.propagate
    py_warnings.addHandler(to_log)
    py_warnings.propagate = False
    logging.captureWarnings(True)
    try:
        yield log_path
    finally:
        logging.captureWarnings(False)
        py_warnings.removeHandler(to_log)
        py_warnings.propagate = was_propagating
        log.flush()
        sys.stdout, sys.stderr = streams
        for handler, stream_ in handlers.items():
            handler.setStream(stream_)
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        _terminal.close()
        _terminal = None
        log.close()
