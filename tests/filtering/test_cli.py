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


def _train(tmp_path, capsys, *extra):
    with pytest.raises(SystemExit) as exc:
        main(["filter", "train-quality", "--embedder", "hashing", *extra])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_holdout_outside_its_range_is_one_line(tmp_path, capsys):
    out = tmp_path / "q.json"
    for value in ("1.0", "-0.1"):
        assert "holdout must be in [0, 1)" in _train(tmp_path, capsys, "--holdout", value,
                                                    "--output", str(out))
    assert not out.exists()


def test_null_text_is_refused_with_file_and_line(tmp_path, capsys):
    import json

    data = tmp_path / "labels.jsonl"
    data.write_text(json.dumps({"text": "a good sentence", "label": 1}) + "\n"
                    + json.dumps({"text": None, "label": 0}) + "\n")
    err = _train(tmp_path, capsys, "--data", str(data), "--output", str(tmp_path / "q.json"))
    assert f"{data}:2: text must be a non-empty string" in err


def test_an_existing_head_is_kept_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "q.json"
    out.write_text("earlier head")
    err = _train(tmp_path, capsys, "--output", str(out))
    assert "--overwrite true" in err and str(out) in err
    assert out.read_text() == "earlier head"
    main(["filter", "train-quality", "--embedder", "hashing", "--output", str(out),
          "--overwrite", "true"])
    assert '"kind": "binary"' in out.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.json"]  # no temp file left


def test_an_output_under_a_file_is_refused_before_training(tmp_path, capsys, monkeypatch):
    import loki.filtering.quality as quality

    monkeypatch.setattr(quality, "load_embedder", lambda *a: pytest.fail("trained anyway"))
    (tmp_path / "afile").write_text("x")
    err = _train(tmp_path, capsys, "--output", str(tmp_path / "afile" / "x.json"))
    assert "is a file, not a folder" in err


def test_an_unknown_embedder_names_the_known_ones(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["filter", "train-quality", "--embedder", "minlm",
              "--output", str(tmp_path / "q.json")])
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'minlm'" in err and "minilm, hashing" in err
