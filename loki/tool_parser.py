"""The jsonargparse parser every ``loki`` tool builds its options on.

Its config dataclasses' attribute docstrings become the options' ``--help`` text, and a class
docstring's first line the title of its group. jsonargparse's setting for that is global, so
each tool turns it on itself rather than relying on another tool having run first in the same
process. The help is printed as plain text: the RST double backticks of the docstrings are left
out.
"""

from __future__ import annotations

from typing import Any

from jsonargparse import ArgumentParser, DefaultHelpFormatter, set_parsing_settings


class PlainHelpFormatter(DefaultHelpFormatter):
    """jsonargparse's help (types, defaults) without the docstrings' ``double backticks``."""

    def format_help(self) -> str:
        return super().format_help().replace("``", "")


def tool_parser(**kwargs: Any) -> ArgumentParser:
    """An ``ArgumentParser(**kwargs)`` whose --help describes dataclass fields by their
    attribute docstrings, in plain text."""
    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    return ArgumentParser(formatter_class=PlainHelpFormatter, **kwargs)
