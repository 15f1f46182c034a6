"""Parsing a tool's command line so that a missing argument is named as the user types it.

jsonargparse names missing required arguments by their config keys (``required: checkpoint``,
``hf.output``); the user typed, or should type, ``--checkpoint`` and ``--output``. ``parse_args``
says that instead, and names a missing positional argument by its metavar (``CHECKPOINT``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from loki.errors import LokiError

_REQUIRED = re.compile(r"the following arguments are required: (.+)$")


def parse_args(parser: Any, argv: Sequence[str] | None) -> Any:
    """``parser.parse_args(argv)``; a missing required argument is a LokiError naming its flag.

    Works where errors are raised as jsonargparse's ``ArgumentError`` (under ``loki``, which
    raises them instead of printing the usage, and with ``exit_on_error=False``)."""
    from jsonargparse import ArgumentError

    try:
        return parser.parse_args(argv)
    except ArgumentError as err:
        missing = _REQUIRED.search(" ".join(str(err).split()))
        if not missing:
            raise
        flags = [flag_of(parser, key.strip()) for key in missing[1].split(",")]
        raise LokiError(f"the following arguments are required: {', '.join(flags)}") from None


def flag_of(parser: Any, key: str) -> str:
    """How the user gives config key ``key`` on the command line: ``--name``, or the metavar
    of a positional argument; a subcommand's keys (``hf.output``) are looked up in its parser."""
    head, _, rest = key.partition(".")
    for action in parser._actions:
        choices = getattr(action, "choices", None)
        if rest and isinstance(choices, dict) and isinstance(choices.get(head), type(parser)):
            return flag_of(choices[head], rest)
        if action.dest == key:
            longs = [o for o in action.option_strings if o.startswith("--")]
            return longs[0] if longs else str(action.metavar or key.upper())
    return key
