"""`loki tokenizer prune|stats` through the command line, YAML configs and corpus formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import loki.tokenizer_cli as cli
from loki.tokenizer import LokiTokenizer, unreachable_tokens

CONFIGS = sorted(Path(__file__).parent.parent.glob("experiments/tokenizer/*.yaml"))


def corpus(root: Path) -> Path:
    import argparse
    import typing

    root.mkdir(parents=True, exist_ok=True)
    for i, mod in enumerate((argparse, typing)):
        lines = [json.dumps({"text": c}) for c in Path(mod.__file__).read_text().split("\n\n")]
        (root / f"part{i}.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_parse(path):
    cfg = cli.parse_config(path)
    assert cfg.vocab_size == yaml.safe_load(path.read_text())["vocab_size"]
    assert "<|endoftext|>" in cfg.special_tokens


def test_prune_then_stats_from_yaml(tmp_path, capsys):
    src = corpus(tmp_path / "corpus")
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


def test_datasets_folder_corpus(tmp_path):
    datasets = pytest.importorskip("datasets")
    texts = [f"document {i} about tokenizers and merges" for i in range(20)]
    datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(tmp_path / "ds"))
    files = cli.corpus_files([str(tmp_path / "ds")])
    assert list(cli.iter_documents(files)) == texts


def test_fsspec_url_corpus():
    import fsspec

    fs = fsspec.filesystem("memory")
    docs = [f"remote document {i}" for i in range(5)]
    with fs.open("/loki-corpus/part.jsonl", "w") as fh:
        fh.write("".join(json.dumps({"text": d}) + "\n" for d in docs))
    files = cli.corpus_files(["memory://loki-corpus/*.jsonl"])
    assert len(files) == 1 and files[0].endswith("loki-corpus/part.jsonl")
    assert list(cli.iter_documents(files)) == docs
    assert cli.corpus_manifest(files)[0]["bytes"] > 0
    fs.rm("/loki-corpus", recursive=True)


def test_plain_text_is_cut_into_documents(tmp_path):
    para = "word " * 2000 + "\n\n"
    (tmp_path / "a.txt").write_text(para * 20)
    docs = list(cli.iter_documents([tmp_path / "a.txt"]))
    assert len(docs) > 1 and "".join(docs) == para * 20


@pytest.mark.slow
def test_parallel_counts_equal_serial(tmp_path):
    src = corpus(tmp_path / "corpus")
    files = cli.corpus_files([str(src)])
    serial = cli.PruneConfig(corpus=[str(src)], workers=1, batch_bytes=20_000)
    parallel = cli.PruneConfig(corpus=[str(src)], workers=2, batch_bytes=20_000)
    a = cli.count_usage(serial, files, 100277)
    b = cli.count_usage(parallel, files, 100277)
    assert a.bytes == b.bytes > 0 and (a.counts == b.counts).all()
