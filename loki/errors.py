"""The one exception type the command line turns into a one-line message and a non-zero exit,
and how any error becomes that one line."""

import re


class LokiError(Exception):
    """A problem with the user's input (config, files, data) that they can fix.

    The message names what to fix. ``loki`` prints it on one line and exits with status 2;
    library callers get the exception as usual.
    """


def _config_files(args: list[str] | None) -> list[str]:
    args = list(args or [])
    out = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--config"]
    return out + [a.split("=", 1)[1] for a in args if a.startswith("--config=")]


def one_line(err: BaseException, args: list[str] | None = None) -> str:
    """``err``'s message on one line. A YAML parser names ``<unicode string>`` as the place of a
    syntax error (jsonargparse gives it the text, not the file): name the ``--config`` file
    from ``args`` instead."""
    text = " ".join(str(err).split())
    bare = re.search(r'Parser key "([\w.]+)": Expected a <class \'list\'>\. Got value: (.*)$', text)
    if bare:  # a list option given one bare value
        text += f"; a list goes in brackets: --{bare[1]} '[{bare[2]}]'"
    files = _config_files(args)
    if "<unicode string>" in text and files:
        text = text.replace('"<unicode string>"', files[-1]).replace("<unicode string>", files[-1])
        if len(files) > 1:
            text += f" (one of the config files {', '.join(files)})"
    return text
