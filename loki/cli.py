"""The ``loki`` command.

``loki fit|validate|test|predict --config experiments/<run>.yaml`` goes to Lightning's
``LightningCLI`` (model, data, trainer and callbacks from YAML; ``--print_config`` works).
Every other subcommand is a tool with its own YAML config, dispatched through ``TOOLS``: each
entry names a module whose ``main(argv)`` parses its arguments with jsonargparse.

A ``LokiError`` raised anywhere below is printed as one line and exits with status 2.

``filter``, ``fit`` and ``distill`` run under a quiet console (``loki.console``): the command's own
lines and progress bars on the terminal, libraries' logs and warnings in ``runs/logs/<command>.log``;
``--verbose`` (anywhere on the command line) keeps everything on the terminal. ``loki demo`` has
its own log, ``<run_dir>/demo.log``.
"""

from __future__ import annotations

import importlib
import os
import sys

from loki.errors import LokiError

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")
QUIET_COMMANDS = ("filter", "fit", "distill")
LOG_DIR = "runs/logs"

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
    "consolidate": ("loki.sharding", "merge a distributed checkpoint into one file"),
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


def main(argv: list[str] | None = None) -> None:
    _set_offline_defaults()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return
    command, rest = argv[0], argv[1:]
    verbose = "--verbose" in rest and command in QUIET_COMMANDS
    rest = [a for a in rest if a != "--verbose"] if verbose else rest
    try:
        if command in QUIET_COMMANDS:
            from loki.console import quiet_console, say

            log = os.path.join(LOG_DIR, f"{command}.log")
            with quiet_console(log, verbose, title=" ".join(["loki", command, *rest])):
                _run(command, rest)
            if not verbose:
                say(f"library logs and warnings: {log} (--verbose shows them here)")
        else:
            _run(command, rest)
    except LokiError as err:
        print(f"loki {command}: error: {err}", file=sys.stderr)
        sys.exit(2)


def _run(command: str, rest: list[str]) -> None:
    if command in LIGHTNING_SUBCOMMANDS:
        lightning_main([command, *rest])
    elif command in TOOLS:
        importlib.import_module(TOOLS[command][0]).main(rest)
    else:
        raise LokiError(f"unknown command {command!r}; choose one of: "
                        + ", ".join([*LIGHTNING_SUBCOMMANDS, *TOOLS]))


if __name__ == "__main__":
    main()
