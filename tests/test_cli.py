"""The `loki` command: dispatch, help, and one-line errors with a non-zero exit."""

from __future__ import annotations

import json
import re

import pytest

from loki.cli import TOOLS, main


def _fails(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    # Lightning may log before the failure; the error itself is the last line, and one line.
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert ": error: " in err and err.startswith("loki"), err
    return err


def test_help_lists_every_tool(capsys):
    main(["--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in [*TOOLS, "fit", "validate"])


def test_no_command_prints_the_usage_and_fails(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2 and "usage: loki <command>" in capsys.readouterr().err


def test_every_tool_module_exists():
    import importlib

    for module, _ in TOOLS.values():
        assert callable(importlib.import_module(module).main), module


def test_unknown_command(capsys):
    assert "unknown command 'fitt'" in _fails(capsys, ["fitt"])


@pytest.fixture
def fit_yaml(tmp_path):
    """A tiny but complete run config over a corpus written here."""
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"document {i} " * 40}) + "\n"
                              for i in range(20)))

    def write(model: str = "config: tiny", data: str = "", extra: str = "") -> str:
        path = tmp_path / "run.yaml"
        path.write_text(
            f"model:\n  {model}\n"
            f"data:\n  corpus: [{corpus}]\n  block_size: 32\n  micro_batch_size: 2\n"
            f"  cache_dir: {tmp_path / 'cache'}\n{data}"
            f"trainer:\n  accelerator: cpu\n  max_steps: 2\n  logger: false\n"
            f"  enable_checkpointing: false\n  default_root_dir: {tmp_path}\n{extra}")
        return str(path)

    return write


def test_unknown_config_name(capsys, fit_yaml):
    err = _fails(capsys, ["fit", "--config", fit_yaml(model="config: huge")])
    assert "unknown config name 'huge'" in err


def test_unknown_yaml_key(capsys, fit_yaml):
    err = _fails(capsys, ["fit", "--config", fit_yaml(extra="  max_stepz: 3\n")])
    assert "max_stepz" in err


def test_missing_and_empty_corpus(capsys, fit_yaml, tmp_path):
    path = fit_yaml()
    text = open(path).read()
    open(path, "w").write(text.replace(str(tmp_path / "corpus.jsonl"), str(tmp_path / "nope.jsonl")))
    assert "nope.jsonl" in _fails(capsys, ["fit", "--config", path])
    (tmp_path / "empty.jsonl").write_text("")
    open(path, "w").write(text.replace(str(tmp_path / "corpus.jsonl"), str(tmp_path / "empty.jsonl")))
    assert "empty.jsonl" in _fails(capsys, ["fit", "--config", path])


def test_fit_runs_from_a_yaml(fit_yaml, tmp_path):
    main(["fit", "--config", fit_yaml()])


@pytest.mark.parametrize("command", ["export", "generate"])
def test_tools_that_load_transformers_models_do_not_print_torchao_load_failures(command):
    """transformers imports torchao when it is installed, and torchao then prints its CUDA-only
    kernels failing to load (and deprecation lines) into the console of a model export."""
    import subprocess
    import sys

    pytest.importorskip("torchao")
    code = ("import importlib\n"
            "from loki import cli\n"
            "cli.tool_main = lambda module, args: importlib.import_module('transformers.modeling_utils')\n"
            f"cli._run({command!r}, [])\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Failed to load" not in done.stderr and "register_constant" not in done.stderr, done.stderr


@pytest.mark.parametrize(("argv", "named"), [
    (["compare", "--a", "[x]"], "required: --b, --output_dir"),
    (["export", "hf"], "required: <checkpoint> (after hf), --output"),
    (["export", "hf", "x.ckpt"], "required: --output"),
    (["tokenize"], "required: --inputs, --output"),
    (["generate", "--prompt+", "x"], "required: --checkpoint"),
    (["probe"], "required: --checkpoint, --output_dir"),
    (["consolidate"], "required: <checkpoint>"),
    (["eval", "--checkpoint", "x.ckpt"], "required: --output_dir"),
])
def test_missing_options_are_named_as_typed_not_as_config_keys(capsys, argv, named):
    assert _fails(capsys, argv).endswith(named)


def test_predict_names_the_tools_that_do_it(capsys):
    assert "loki generate" in _fails(capsys, ["predict", "--config", "experiments/small-cpu.yaml"])


@pytest.mark.parametrize("tool", ["generate", "probe", "compare", "consolidate", "export"])
def test_help_describes_the_tool_in_plain_complete_sentences(tool, capsys):
    with pytest.raises(SystemExit):
        main([tool, "--help"])
    text = capsys.readouterr().out
    description = " ".join(text.split("\n\n")[1].split())  # the paragraph after the usage
    assert "``" not in text and description.endswith(".")
    assert len(description) > 60, description


# Subcommands a tool dispatches by hand, ahead of its parser: its usage line cannot list them.
HAND_DISPATCHED = {"filter": ["train-quality", "report"], "eval": ["prepare-data"]}
# A group title is a class docstring's first line: one that ends on one of these words, or with
# a bracket left open, was cut from a sentence that goes on on the next line.
CUT_TITLE = re.compile(r"\b(and|or|of|the|a|an|to|in|for|with|by|from|on|at|as|its)$")
JSONARGPARSE_SUFFIX = re.compile(r"\s*\((required, )?(type|default): .*\)$")


def _help(capsys, argv: list[str]) -> str:
    try:
        main([*argv, "--help"])
    except SystemExit as exit_:
        assert exit_.code in (0, None), argv
    captured = capsys.readouterr()
    return captured.out + captured.err


def _help_problems(command: str, text: str) -> list[str]:
    """What is wrong with one ``--help`` text: options, positionals and subcommands listed
    with no description (jsonargparse then shows only ``(type: ..., default: ...)``) and group
    titles cut mid-sentence; and RST markup, which a terminal shows as is."""
    problems, entries, section = [], [], ""
    if "``" in text:
        problems.append(f"{command}: RST double backticks in the help text")
    for line in text.splitlines():
        if line and not line[0].isspace() and line.endswith(":") and not line.startswith("usage:"):
            section = line[:-1].strip()
            title = section.replace("``", "")
            if CUT_TITLE.search(title) or title.count("(") != title.count(")"):
                problems.append(f"{command}: group title cut mid-sentence: {section!r}")
            continue
        indent = len(line) - len(line.lstrip())
        entry_indent = 4 if section == "subcommands" else 2
        if indent == entry_indent and line.strip() != "Available subcommands:":
            name, _, help_ = line.strip().partition("  ")
            entries.append([name, help_.strip()])
        elif indent > entry_indent and entries and section:
            entries[-1][1] += " " + line.strip()
        elif not line.strip():
            entries.append(["", "-"])  # a blank line ends an entry
    for name, help_ in entries:
        if name and not JSONARGPARSE_SUFFIX.sub("", help_).strip():
            problems.append(f"{command}: {name} has no description")
    return problems


def test_every_option_of_every_tool_and_subcommand_is_described(capsys, monkeypatch):
    """A new user reads ``--help``: every option says what it does, and every group title is
    a whole sentence. Each tool must turn its config's attribute docstrings on itself (the
    setting is global to jsonargparse, so it is switched off before each one)."""
    from jsonargparse import _optionals

    problems, commands = [], [[tool] for tool in TOOLS]
    while commands:
        argv = commands.pop(0)
        monkeypatch.setitem(_optionals._docstring_parse_options, "attribute_docstrings", False)
        text = _help(capsys, argv)
        problems += _help_problems(" ".join(argv), text)
        listed = re.match(r"usage: loki [\w -]+? \{([\w,-]+)\}", text)
        subcommands = listed.group(1).split(",") if listed and len(argv) == 1 else []
        for sub in subcommands:
            if not re.search(rf"^    {sub}  +\S", text, re.MULTILINE):
                problems.append(f"{argv[0]} --help lists no description of {sub}")
        commands += [[*argv, sub] for sub in subcommands + HAND_DISPATCHED.get(argv[0], [])
                     if len(argv) == 1]
    assert not problems, "\n".join(problems)


def test_eval_into_a_file_is_refused_before_the_checkpoint_is_read(capsys, tmp_path):
    afile = tmp_path / "notes.txt"
    afile.write_text("mine")
    err = _fails(capsys, ["eval", "--checkpoint", str(tmp_path / "absent.ckpt"),
                          "--output_dir", str(afile)])
    assert "--output_dir" in err and "is a file, not a folder" in err, err
    assert afile.read_text() == "mine"


@pytest.mark.parametrize("command", ["validate", "test"])
def test_validate_and_test_without_a_checkpoint_are_refused(capsys, command):
    """Without --ckpt_path they would evaluate freshly initialized weights, without a word."""
    err = _fails(capsys, [command, "--config", "experiments/small-cpu.yaml"])
    assert err == (f"loki {command}: error: loki {command} evaluates a checkpoint: pass "
                   "--ckpt_path (e.g. <run folder>/checkpoints/last.ckpt)"), err


@pytest.mark.parametrize("command, says", [
    ("filter", "loki filter: interrupted; the same command picks up where it stopped"),
    ("export", "loki export: interrupted")])
def test_ctrl_c_in_a_tool_is_one_line_and_exit_130(capsys, monkeypatch, command, says):
    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr("loki.cli._run", interrupted)
    with pytest.raises(SystemExit) as info:
        main([command, "--config", "any.yaml"])
    assert info.value.code == 130
    err = capsys.readouterr().err
    assert err.strip() == says and "Traceback" not in err
