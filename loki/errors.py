"""The one exception type the command line turns into a one-line message and a non-zero exit."""


class LokiError(Exception):
    """A problem with the user's input (config, files, data) that they can fix.

    The message names what to fix. ``loki`` prints it on one line and exits with status 2;
    library callers get the exception as usual.
    """
