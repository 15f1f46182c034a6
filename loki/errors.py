"""The one exception type the command line turns into a one-line message and a non-zero exit,
and how any error becomes that one line."""

import json
import re
import shlex


class LokiError(Exception):
    """A problem with the user's input (config, files, data) that they can fix.

    The message names what to fix. ``loki`` prints it on one line and exits with status 2;
    library callers get the exception as usual.
    """


def _config_files(args: list[str] | None) -> list[str]:
    args = list(args or [])
    out = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--config"]
    return out + [a.split("=", 1)[1] for a in args if a.startswith("--config=")]


def _raw_value(args: list[str] | None, key: str) -> str | None:
    """What the user typed after ``--key`` (the error shows it parsed: ``a: b`` as a dict)."""
    args, flag = list(args or []), f"--{key}"
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def _list_hint(key: str, value: str) -> str:
    """How to pass ``value`` as a one-item list. Brackets alone only work for a plain word:
    YAML would split ``a, b`` in two and read ``Q: why`` as a mapping, so such a value is
    written as a quoted JSON string inside the brackets."""
    if re.fullmatch(r"[\w./~+=@-][\w ./~+=@()*?-]*", value) and not value.endswith(" "):
        return f"a list goes in brackets: --{key} '[{value}]'"
    return (f"a list goes in brackets, with a value like this one quoted inside: "
            f"--{key} {shlex.quote('[' + json.dumps(value, ensure_ascii=False) + ']')}")


_SIMPLE = {"bool": ["true", "false"], "NoneType": ["null"], "int": ["an integer"],
           "float": ["a number"], "str": ["a string"], "dict": ["a mapping"],
           "list": ["a list"]}


def _accepted(types: str) -> list[str] | None:
    """jsonargparse's type list (``<class 'bool'>, typing.Literal['auto']``) as the values a
    user types (``true``, ``false``, ``auto``); None when a type is not a plain one."""
    out = []
    for t in re.findall(r"typing\.Literal\[[^\]]*\]|<class '[\w.]+'>|[\w.]+\[[^\]]*\]", types):
        if t.startswith("typing.Literal"):
            out += [v.strip().strip("'\"") for v in t[len("typing.Literal["):-1].split(",")]
        elif t.startswith("<class"):
            if t[8:-2] not in _SIMPLE:
                return None
            out += _SIMPLE[t[8:-2]]
        elif t.split("[")[0] in _SIMPLE:
            out += _SIMPLE[t.split("[")[0]]
        else:
            return None
    return out or None


def _choices(values: list[str]) -> str:
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " or " + values[-1]


def one_line(err: BaseException, args: list[str] | None = None) -> str:
    """``err``'s message on one line.

    A value of none of an option's plain types says which values the option takes, as a user
    types them (``true, false or auto``), where jsonargparse lists Python types and one error
    per type; a setting of a class given by ``class_path`` (a callback, ``model.sharding``) names
    that class and the option holding it. A YAML parser names ``<unicode string>`` as the place
    of a syntax error (jsonargparse gives it the text, not the file): name the ``--config`` file
    from ``args`` instead."""
    text = " ".join(str(err).split())
    bare = re.search(r'Parser key "([\w.]+)": Expected a <class \'list\'>\. Got value: (.*)$', text)
    optional = re.search(r'Parser key "([\w.]+)": Does not validate against any of the Union '
                         r'subtypes Subtypes: \[list\[[\w.]+\], <class \'NoneType\'>\].*'
                         r"Given value type: <class 'str'> Given value: (.*)$", text)
    if bare:  # a list option given one bare value
        text += "; " + _list_hint(bare[1], _raw_value(args, bare[1]) or bare[2])
    elif optional:  # the same for an optional list: jsonargparse's message lists every subtype
        key = optional[1]
        text = (f'Parser key "{key}": expected a list (or null), got the bare value '
                f"{optional[2]}; " + _list_hint(key, _raw_value(args, key) or optional[2]))
    elif nested := re.search(
            r"Problem with given class_path '([\w.]+)': Parser key \"([\w.]+)\": Expected a "
            r"(<class '\w+'>|typing\.Literal\[[^\]]*\])\. Got value: (.*?)(?: - |$)", text):
        # a setting of a class given by class_path (a callback, model.sharding): jsonargparse
        # wraps its one error in the outer option's every subtype
        outer = re.search(r'Parser key "([\w.]+)": ', text)
        accepted = _accepted(nested[3])
        if accepted and outer:
            text = (f'Parser key "{nested[2]}" of {nested[1]} in {outer[1]}: expected '
                    f"{_choices(accepted)}; got {nested[4]}")
    else:  # a value of none of the types: say which values the option takes, as typed
        union = re.search(r'Parser key "([\w.]+)": Does not validate against any of the Union '
                          r"subtypes Subtypes: \[(.*?)\] Errors: .* Given value: (.*)$", text)
        single = re.search(r'Parser key "([\w.]+)": Expected a (<class \'\w+\'>|typing\.'
                           r"Literal\[[^\]]*\])\. Got value: (.*)$", text)
        found = union or single
        accepted = _accepted(found[2]) if found else None
        if accepted:
            text = (f'Parser key "{found[1]}": expected {_choices(accepted)}; got '
                    f"{_raw_value(args, found[1]) or found[3]}")
    files = _config_files(args)
    if "<unicode string>" in text and files:
        text = text.replace('"<unicode string>"', files[-1]).replace("<unicode string>", files[-1])
        if len(files) > 1:
            text += f" (one of the config files {', '.join(files)})"
    return text
