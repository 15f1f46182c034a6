"""``loki filter`` and its subcommands on the command line: help text and one-line errors."""

from __future__ import annotations

import pytest

from loki.cli import main


@pytest.mark.parametrize("argv, described", [
    (["filter", "--help"], ["Drop a document whose cosine similarity", "Where the stages run"]),
    (["filter", "train-quality", "--help"], ["Fraction held out", "Embedding model"]),
])
def test_help_describes_every_option(capsys, argv, described):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for text in described:
        assert text in out
