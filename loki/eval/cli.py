"""``loki eval``: the one-shot benchmark evaluation of a checkpoint with lm-eval.

    loki eval --config experiments/eval/demo.yaml
    loki eval --checkpoint runs/x/last.ckpt --suite.preset leaderboard --output_dir runs/x/eval
    loki eval prepare-data --data_dir data/eval   (benchmark files for offline runs)

Writes ``results.json`` (Table-1 summary + lm-eval's raw results) and ``results.md`` (Table 1
with both averages, stderr and the paper's reference numbers) into ``output_dir``, and refuses
to evaluate into the same folder twice unless ``--force true --force_reason "..."``.
"""

from __future__ import annotations

from pathlib import Path

from loki.eval.suite import SuiteConfig, run_suite


def build_parser():
    from jsonargparse import ActionConfigFile

    from loki.tool_parser import tool_parser

    p = tool_parser(prog="loki eval", description=__doc__.split("\n")[0],
                    epilog="also: loki eval prepare-data (the benchmark files that --suite.offline "
                           "true reads); it takes --help")
    p.add_argument("--config", action=ActionConfigFile)
    p.add_argument("--checkpoint", type=str, required=True, help=".ckpt file, distributed checkpoint folder or run folder (its checkpoints/last.ckpt)")
    p.add_argument("--tokenizer", type=str | None, default=None,
                   help="tokenizer spec (default: the one recorded in the checkpoint)")
    p.add_class_arguments(SuiteConfig, "suite")
    p.add_argument("--batch_size", type=int, default=8, help="requests per forward pass")
    p.add_argument("--device", type=str, default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", type=str, default="auto", help="auto, float32, bfloat16, float16")
    p.add_argument("--max_length", type=int | None, default=None,
                   help="tokens of context the model sees (default: training block_size)")
    p.add_argument("--output_dir", type=str, required=True, help="results.json / results.md")
    p.add_argument("--force", type=bool, default=False, help="re-run into a folder that has results")
    p.add_argument("--force_reason", type=str | None, default=None, help="why (kept in results)")
    return p


def parse_config(path: str | Path):
    """Parse (and type-check) a ``loki eval`` YAML without running anything."""
    return build_parser().parse_args(["--config", str(path)])


def main(argv: list[str] | None = None) -> None:
    if argv and argv[0] == "prepare-data":  # the benchmark files the offline tasks read
        from loki.eval.prepare_data import main as prepare_main

        return prepare_main(argv[1:])

    parser = build_parser()
    cfg = parser.parse_args(argv)
    from loki.eval.adapter import LokiEvalLM
    from loki.eval.local_tasks import bind_tasks
    from loki.eval.presets import preset_rows
    from loki.eval.suite import already_ran, check_once

    # refuse before loading a large checkpoint, the suite's missing local data too
    from loki.output import check_writable

    check_writable(cfg.output_dir, "--output_dir")
    check_once(already_ran(cfg.output_dir), cfg.force, cfg.force_reason, cfg.output_dir)
    suite = SuiteConfig(**vars(cfg.suite)) if not isinstance(cfg.suite, SuiteConfig) else cfg.suite
    rows = preset_rows(suite.preset, suite.offline, suite.tasks, suite.num_fewshot)
    bind_tasks([r.task for r in rows], suite.data_dir, option="--suite.data_dir")
    lm = LokiEvalLM(checkpoint=cfg.checkpoint, tokenizer=cfg.tokenizer, batch_size=cfg.batch_size,
                    device=cfg.device, dtype=cfg.dtype, max_length=cfg.max_length)
    summary = run_suite(lm, suite, cfg.output_dir, force=cfg.force, force_reason=cfg.force_reason,
                        metadata={"checkpoint": lm.eval_model.checkpoint,
                                  "tokenizer": lm.eval_model.tokenizer_spec,
                                  "vocab_hash": lm.loki_tokenizer.vocab_hash})
    print((Path(cfg.output_dir) / "results.md").read_text())
    print(f"average {100 * summary['average']:.2f}  results in {cfg.output_dir}")
