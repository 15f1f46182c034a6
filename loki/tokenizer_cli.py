"""``loki tokenizer prune|stats``: fit a pruned cl100k_base vocabulary on a corpus; measure one.

The work is done by :mod:`loki.tokenizer_prune` (pruning) and :mod:`loki.tokenizer_stats` over
documents read by :mod:`loki.tokenizer_corpus`; this module parses the command line and calls them.
"""

from __future__ import annotations

import os
from dataclasses import fields

from loki.tokenizer_prune import PruneConfig, prune
from loki.tokenizer_stats import stats


def build_parser():
    from jsonargparse import ActionConfigFile, ArgumentParser

    from loki.tool_parser import tool_parser

    parser = tool_parser(prog="loki tokenizer", description=__doc__.split("\n")[0])
    prune_p = tool_parser(description="prune cl100k_base to vocab_size tokens on a corpus")
    prune_p.add_argument("--config", action=ActionConfigFile)
    prune_p.add_class_arguments(PruneConfig)
    stats_p = ArgumentParser(description="bytes/token and encode MB/s of tokenizers on text")
    stats_p.add_argument("--config", action=ActionConfigFile)
    stats_p.add_argument("--tokenizers", type=list[str], default=["cl100k_base"],
                         help="'cl100k_base' or saved tokenizer folders")
    stats_p.add_argument("--text", type=list[str], required=True,
                         help="files, folders or globs to measure on (same formats as prune)")
    stats_p.add_argument("--max_bytes", type=int, default=4_000_000,
                         help="stop reading whole documents once this many bytes are read")
    stats_p.add_argument("--repeat", type=int, default=3, help="timed repetitions (best kept)")
    stats_p.add_argument("--num_threads", type=int, default=1, help="tiktoken encode threads")
    stats_p.add_argument("--text_field", type=str, default="text", help="JSONL text field")
    sub = parser.add_subcommands(dest="command")
    sub.add_subcommand("prune", prune_p, help="prune cl100k_base on a corpus (BPE closure kept)")
    sub.add_subcommand("stats", stats_p, help="bytes/token and encode MB/s on given text")
    return parser


def _prune_config(ns) -> PruneConfig:
    return PruneConfig(**{f.name: ns[f.name] for f in fields(PruneConfig)})


def parse_config(path: str | os.PathLike) -> PruneConfig:
    """A ``loki tokenizer prune`` YAML -> ``PruneConfig`` (used by the experiments test)."""
    return _prune_config(build_parser().parse_args(["prune", "--config", str(path)]).prune)


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    cfg = parser.parse_args(argv)
    if cfg.command == "prune":
        prune(_prune_config(cfg.prune))
    else:
        sub = cfg.stats
        stats(sub.tokenizers, sub.text, sub.max_bytes, sub.repeat, sub.num_threads,
              sub.text_field)


if __name__ == "__main__":
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    main()
