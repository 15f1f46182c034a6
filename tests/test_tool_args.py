"""A missing required argument is named as the user types it: ``--checkpoint``, not the config
key ``checkpoint``; a subcommand's ``--output``, not ``hf.output``; a positional by its metavar."""

from __future__ import annotations

import pytest

from loki.cli import main


@pytest.mark.parametrize("argv, missing", [
    (["generate", "--prompt+", "x"], "--checkpoint"),
    (["probe"], "--checkpoint, --output_dir"),
    (["compare", "--a", "[x.ckpt]", "--output_dir", "o"], "--b"),
    (["export", "hf", "x.ckpt"], "--output"),
    (["consolidate"], "CHECKPOINT"),
    (["eval", "--checkpoint", "x.ckpt"], "--output_dir"),
])
def test_missing_arguments_are_named_by_their_flags(argv, missing, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"loki {argv[0]}: error: the following arguments are required: {missing}"


@pytest.mark.parametrize("tool", ["generate", "probe", "compare", "consolidate", "export"])
def test_help_describes_the_tool_in_plain_complete_sentences(tool, capsys):
    with pytest.raises(SystemExit):
        main([tool, "--help"])
    text = capsys.readouterr().out
    description = " ".join(text.split("\n\n")[1].split())  # the paragraph after the usage
    assert "``" not in text and description.endswith(".")
    assert len(description) > 60, description
