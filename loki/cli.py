"""The ``loki`` command.

``loki fit|validate|test --config experiments/<run>.yaml`` goes to Lightning's
``LightningCLI`` (model, data, trainer and callbacks from YAML; ``--print_config`` works).
Every other subcommand is a tool with its own YAML config, dispatched through ``TOOLS``: each
entry names a module whose ``main(argv)`` parses its arguments with jsonargparse.

A ``LokiError`` raised anywhere below is printed as one line and exits with status 2, and so
is a file the user named that cannot be found, read or written, or a config that does not parse.
``LOKI_DEBUG=1`` shows the full traceback instead.

``filter``, ``fit``, ``validate``, ``test``, ``distill`` and ``tokenize`` run under a quiet console (``loki.console``): the
command's own lines and progress bars on the terminal, libraries' logs and warnings in
``runs/logs/<command>.log`` (``$LOKI_LOG_DIR/<command>.log`` where that is set, e.g. one folder per
cluster job);
``--verbose`` (anywhere on the command line) keeps everything on the terminal, and so do
``--help`` and ``--print_config``, whose output is the answer. ``loki demo`` has its own log,
``<run_dir>/demo.log``.
"""

from __future__ import annotations

import glob
import importlib
import os
import sys
import time
from typing import Any

from loki.errors import LokiError, one_line

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test")  # no predict: `loki generate` samples
QUIET_COMMANDS = ("filter", "fit", "validate", "test", "distill", "tokenize")
PRINTING_FLAGS = ("-h", "--help", "--print_config")  # the output is the answer: never quiet
# Tools that import transformers but never torchao's kernels, whose load failures (CUDA-only
# kernels on a CPU) would otherwise open their console; the quiet commands do the same.
TRANSFORMERS_TOOLS = ("export", "eval", "compare", "probe", "generate")
LOG_DIR = "runs/logs"  # the default of $LOKI_LOG_DIR (see log_path)
# Tools whose rerun after an interrupt keeps the finished part of the work (datatrove completion
# markers; the demo's finished stages). `loki fit` says how to resume itself (loki.resume).
RESUMABLE = ("filter", "distill", "demo")

# name -> (module with ``main(argv)``, one-line help)
TOOLS: dict[str, tuple[str, str]] = {
    "filter": ("loki.filtering.cli", "run the data filtering pipeline / train the quality classifier"),
    "tokenizer": ("loki.tokenizer_cli", "prune cl100k_base to a smaller vocabulary; tokenizer stats"),
    "tokenize": ("loki.data.tokenize", "turn filtered documents into token shards"),
    "distill": ("loki.distill.cli", "build the teacher candidate cache for distillation"),
    "eval": ("loki.eval.cli", "one-shot benchmark evaluation of a checkpoint with lm-eval"),
    "generate": ("loki.eval.generate", "sample continuations from a checkpoint"),
    "probe": ("loki.eval.probes", "the paper's qualitative, truthfulness and bias probes"),
    "compare": ("loki.eval.compare", "paired comparison of two checkpoints with bootstrap CIs"),
    "consolidate": ("loki.consolidate", "merge a distributed checkpoint into one file"),
    "export": ("loki.export.cli", "export a checkpoint for other toolkits (hf: transformers)"),
    "report": ("loki.report", "build the run report (Markdown + plots)"),
    "demo": ("loki.demo", "the end-to-end demo pipeline (what `make demo` runs)"),
}


def _set_offline_defaults() -> None:
    # Nothing reaches the network unless the user asked for it: these are defaults, not overrides.
    for key, value in (
        ("HF_HUB_OFFLINE", "1"),
        ("HF_DATASETS_OFFLINE", "1"),
        ("TRANSFORMERS_OFFLINE", "1"),
        ("WANDB_MODE", "offline"),
    ):
        os.environ.setdefault(key, value)


def _usage() -> str:
    lines = ["usage: loki <command> [options]", "", "training (LightningCLI):"]
    lines += [f"  {name:<12} --config experiments/<run>.yaml" for name in LIGHTNING_SUBCOMMANDS]
    lines += ["", "tools (each takes --config and --help):"]
    lines += [f"  {name:<12} {help_}" for name, (_, help_) in TOOLS.items()]
    return "\n".join(lines)


def lightning_main(args: list[str] | None = None) -> None:
    from unittest import mock

    from loki.lightning_cli import LokiCLI

    # ``args`` is this run's whole command line. It goes into sys.argv, not ``LokiCLI(args=)``:
    # with ``trainer.devices: N`` and no torchrun, Lightning starts ranks 1..N-1 by re-running
    # ``sys.argv`` (``[python, sys.argv[0], *sys.argv[1:]]``), so they must see it all.
    with mock.patch.object(sys, "argv", [sys.argv[0], *(args or [])]):
        LokiCLI(args=None)


def tool_main(module: str, args: list[str]) -> None:
    """Run a tool's ``main(args)`` with its jsonargparse errors raised, not printed with the
    usage text and exited: ``main`` prints them as one line (tools build their parsers with
    the default ``exit_on_error=True``)."""
    from unittest import mock

    from jsonargparse import ArgumentError, ArgumentParser

    def raise_error(parser: ArgumentParser, message: str, ex: Exception | None = None):
        raise ArgumentError(None, _flags_for_required(parser, message)) from ex

    with mock.patch.object(ArgumentParser, "error", raise_error):
        importlib.import_module(module).main(args)


def module_main(module: str, prog: str, argv: list[str] | None = None) -> None:
    """``python -m <module>`` for a helper that is not a ``loki`` subcommand, with the tools'
    one-line errors: ``<prog>: error: ...`` and exit status 2 (``LOKI_DEBUG=1``: traceback)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        tool_main(module, args)
    except (LokiError, *_USER_ERRORS, *_argument_errors()) as err:
        if os.environ.get("LOKI_DEBUG") == "1":
            raise
        print(f"{prog}: error: {_one_line(err, args)}", file=sys.stderr)
        sys.exit(2)


_REQUIRED = "the following arguments are required: "


def _flags_for_required(parser: Any, message: str) -> str:
    """jsonargparse names missing options by their config keys (``output_dir``, ``hf.output``):
    name them as typed on the command line instead (``--output_dir``; a positional as
    ``<checkpoint>``, after its subcommand)."""
    if not message.startswith(_REQUIRED):
        return message
    typed: dict[str, str] = {}

    def walk(p: Any, prefix: str = "") -> None:
        for action in p._actions:
            for name, sub in getattr(action, "_name_parser_map", {}).items():
                walk(sub, f"{prefix}{name}.")
            if action.option_strings:
                typed[prefix + action.dest] = action.option_strings[0]
            else:
                where = f" (after {prefix.rstrip('.').replace('.', ' ')})" if prefix else ""
                typed[prefix + action.dest] = f"<{action.dest}>{where}"

    walk(parser)
    keys = [k.strip() for k in message[len(_REQUIRED):].split(",")]
    return _REQUIRED + ", ".join(typed.get(k, k) for k in keys)


def main(argv: list[str] | None = None) -> None:
    _set_offline_defaults()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage(), file=sys.stdout if argv else sys.stderr)
        if not argv:  # a command was expected
            sys.exit(2)
        return
    command, rest = argv[0], argv[1:]
    verbose = False
    try:
        if command in QUIET_COMMANDS:
            verbose, rest = _pop_verbose(rest)
        elif command == "demo" and any(a.split("=")[0] == "--verbose" for a in rest):
            demo_verbose, rest = _pop_verbose(rest)  # its own option, in the same spellings
            rest = [*rest, "--verbose", str(demo_verbose).lower()]
        printing = any(a.split("=")[0] in PRINTING_FLAGS for a in rest)
        if command in QUIET_COMMANDS and printing and {"-h", "--help"} & set(rest):
            try:
                _run(command, rest)
            finally:  # the option is the console's, so the tool's own help cannot list it
                print(VERBOSE_HELP)
        elif command in QUIET_COMMANDS and not printing:
            from loki.console import is_rank_zero, quiet_console, say

            log, started = log_path(command), time.time()
            with quiet_console(log, verbose, title=" ".join(["loki", command, *rest])):
                _run(command, rest)
            if not verbose and is_rank_zero():  # once for a distributed run, not once per rank
                others = _other_rank_logs(command, started)
                say(f"library logs and warnings: {log}{others} (--verbose shows them here)")
        else:
            _run(command, rest)
    except (LokiError, *_USER_ERRORS, *_argument_errors()) as err:
        if os.environ.get("LOKI_DEBUG") == "1":
            raise
        print(f"loki {command}: error: {_one_line(err, rest)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        # Every tool writes its outputs whole or not at all; the resumable ones keep their work.
        again = "; the same command picks up where it stopped" if command in RESUMABLE else ""
        print(f"\nloki {command}: interrupted{again}", file=sys.stderr)
        sys.exit(130)
    except Exception:
        if command in QUIET_COMMANDS and not verbose:  # the traceback follows; the context is there
            print(f"(library logs and warnings: {log_path(command)})",
                  file=sys.stderr, flush=True)
        raise


_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")
VERBOSE_HELP = ("\n--verbose [true|false]  keep libraries' logs and warnings on the terminal "
                f"(by default they go to {LOG_DIR}/<command>.log, or $LOKI_LOG_DIR/<command>.log)")


def log_path(command: str, rank: int | None = None) -> str:
    """Where a quiet command's library logs go: ``runs/logs/<command>.log``, or under
    ``$LOKI_LOG_DIR`` (one folder per cluster job keeps concurrent jobs' logs apart). The other
    ranks of a distributed run write ``<command>.rank<N>.log`` beside it, so that one rank's
    messages (a NCCL timeout, a traceback) read in order."""
    from loki.console import process_rank

    rank = process_rank() if rank is None else rank
    name = f"{command}.log" if rank == 0 else f"{command}.rank{rank}.log"
    return os.path.join(os.environ.get("LOKI_LOG_DIR") or LOG_DIR, name)


def _other_rank_logs(command: str, since: float) -> str:
    """"; other ranks: <command>.rank<N>.log" when other ranks of this run wrote theirs."""
    folder, name = os.path.split(log_path(command, 1))
    pattern = name.replace(".rank1.", ".rank*.")
    written = [p for p in glob.glob(os.path.join(folder, pattern)) if os.path.getmtime(p) >= since]
    return f"; other ranks: {os.path.join(folder, pattern.replace('*', '<N>'))}" if written else ""


def _pop_verbose(rest: list[str]) -> tuple[bool, list[str]]:
    """The quiet console's own option, taken out before the tool parses the rest: ``--verbose``,
    ``--verbose true|false`` or ``--verbose=true|false``, anywhere on the command line."""
    verbose, out, i = False, [], 0
    while i < len(rest):
        arg = rest[i]
        value = arg.split("=", 1)[1] if arg.startswith("--verbose=") else None
        if arg == "--verbose" and i + 1 < len(rest) and rest[i + 1].lower() in (*_TRUE, *_FALSE):
            value, i = rest[i + 1], i + 1
        if arg == "--verbose" or value is not None:
            if value is not None and value.lower() not in (*_TRUE, *_FALSE):
                raise LokiError(f"--verbose takes true or false, got {value!r}")
            verbose = value is None or value.lower() in _TRUE
        else:
            out.append(arg)
        i += 1
    return verbose, out


def _run(command: str, rest: list[str]) -> None:
    if command in LIGHTNING_SUBCOMMANDS:
        lightning_main([command, *rest])
    elif command in TOOLS:
        if command in TRANSFORMERS_TOOLS:
            from loki.console import transformers_without_torchao

            transformers_without_torchao()
        tool_main(TOOLS[command][0], rest)
    elif command == "predict":  # Lightning's, but LokiLM has no predict_step
        raise LokiError("there is no loki predict: sample from a checkpoint with loki generate, "
                        "score it on benchmarks with loki eval")
    else:
        raise LokiError(f"unknown command {command!r}; choose one of: "
                        + ", ".join([*LIGHTNING_SUBCOMMANDS, *TOOLS]))


# Raised by library code on paths and files the user gave: their message names the file.
_USER_ERRORS: tuple[type[BaseException], ...] = (FileNotFoundError, PermissionError,
                                                   IsADirectoryError, NotADirectoryError)


def _argument_errors() -> tuple[type[BaseException], ...]:
    # tools built with exit_on_error=False raise jsonargparse's ArgumentError on a bad config
    from jsonargparse import ArgumentError

    return (ArgumentError,)


def _one_line(err: BaseException, args: list[str]) -> str:
    if not isinstance(err, OSError):
        return one_line(err, args)
    where = f" {err.filename}" if getattr(err, "filename", None) else ""
    return (f"{err.strerror or type(err).__name__}:{where} "
            f"(set LOKI_DEBUG=1 for the traceback)")


if __name__ == "__main__":
    main()
