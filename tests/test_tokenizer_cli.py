"""`loki tokenizer prune|stats` through the command line and the shipped YAML configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import loki.tokenizer_cli as cli
from loki.tokenizer import LokiTokenizer, unreachable_tokens
from tests.helpers.corpus import jsonl_corpus

CONFIGS = sorted(Path(__file__).parent.parent.glob("experiments/tokenizer/*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_parse(path):
    cfg = cli.parse_config(path)
    assert cfg.vocab_size == yaml.safe_load(path.read_text())["vocab_size"]
    assert "<|endoftext|>" in cfg.special_tokens


def test_prune_then_stats_from_yaml(tmp_path, capsys):
    src = jsonl_corpus(tmp_path / "corpus")
    config = tmp_path / "prune.yaml"
    config.write_text(yaml.safe_dump({
        "corpus": [str(src)], "output": str(tmp_path / "tok"), "vocab_size": 1024,
        "workers": 1, "held_out_fraction": 0.1, "exclude_tokens": [" the"]}))
    cli.main(["prune", "--config", str(config)])
    tok = LokiTokenizer.load(tmp_path / "tok")
    assert tok.vocab_size == 1024 and b" the" not in tok.ranks
    assert unreachable_tokens(tok.ranks) == []
    capsys.readouterr()
    cli.main(["stats", "--tokenizers", f"[cl100k_base, {tmp_path / 'tok'}]",
              "--text", f"[{src}]", "--repeat", "1"])
    out = capsys.readouterr().out
    assert "cl100k_base-pruned-1024" in out and tok.vocab_hash in out
