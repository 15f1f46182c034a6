"""``loki filter --config experiments/data/<name>.yaml``, ``loki filter train-quality`` and
``loki filter report --config <same yaml>`` (the report of a Slurm run, once its jobs ended).

Run through ``loki``: datatrove spawns workers, and the ``loki`` console script (like
``python -m loki.filtering.cli``) is an entry point under a main guard.
"""

from __future__ import annotations

import dataclasses
import sys

from loki.errors import LokiError
from loki.filtering.config import FilterConfig, TrainQualityConfig


def _parser(cls, prog: str):
    from jsonargparse import ActionConfigFile

    from loki.tool_parser import tool_parser

    epilog = ("also: loki filter train-quality (the quality classifier), loki filter report "
              "(a Slurm run's report once its jobs ended); each takes --help"
              if prog == "loki filter" else None)
    parser = tool_parser(prog=prog, description=(cls.__doc__ or "").strip(), epilog=epilog)
    parser.add_argument("--config", action=ActionConfigFile, help="YAML config file")
    parser.add_class_arguments(cls, nested_key=None, fail_untyped=False)
    return parser


def parse(cls, argv: list[str], prog: str):
    """argv (``--config X.yaml`` plus dotted overrides) -> an instance of the dataclass ``cls``."""
    parser = _parser(cls, prog)
    init = parser.instantiate(parser.parse_args(argv))
    try:
        return cls(**{f.name: init.get(f.name) for f in dataclasses.fields(cls)})
    except (TypeError, ValueError) as err:
        raise LokiError(f"bad {prog} config: {err}") from err


def parse_config(path) -> FilterConfig:
    """Read a filter YAML (the tests check every file under experiments/data with it)."""
    return parse(FilterConfig, ["--config", str(path)], "loki filter")


def describe_head(output: str, head) -> str:
    """A trained quality head in one line: what it is and how it did on the held-out texts."""
    m = head.metrics
    if "heldout_accuracy" in m:
        heldout = f"held-out accuracy {m['heldout_accuracy']:.3f} on {m['n_test']} texts"
    elif "heldout_mae" in m:
        heldout = f"held-out mean absolute error {m['heldout_mae']:.3f} on {m['n_test']} texts"
    else:
        heldout = "no held-out texts (holdout 0)"
    return (f"quality head: {output} ({head.kind}, {head.embedder} embeddings; {heldout}; "
            f"the head is then fit on all {m['n_train'] + m['n_test']})")


def main(argv: list[str] | None = None) -> None:
    from loki.console import say  # the terminal, also while libraries write to the log

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train-quality":
        from loki.filtering.quality import train_quality

        cfg = parse(TrainQualityConfig, argv[1:], "loki filter train-quality")
        head = train_quality(cfg)
        say(describe_head(cfg.output, head))
        return
    from loki.filtering.pipeline import FilterPipeline

    if argv and argv[0] == "report":  # after a Slurm run: the report from the jobs' stats
        cfg = parse(FilterConfig, argv[1:], "loki filter report")
        report = FilterPipeline(cfg).report() or {}
        if report.get("incomplete"):
            say(f"incomplete: {', '.join(report['incomplete'])} (their jobs have not all ended: "
                "the numbers count finished tasks only; the report in output_dir still "
                "describes the shards published there)")
        say(f"report: {report['path']}")
        return
    cfg = parse(FilterConfig, argv, "loki filter")
    report = FilterPipeline(cfg).run()
    if report.get("submitted"):
        say("submitted the chained Slurm jobs; once the last one has ended: "
            "loki filter report --config <same yaml>")
    if "stages" in report:
        for row in report["stages"]:
            if "docs_out" in row:
                # reading is the clean stage's job: its time (or reuse) is clean's
                stage = "clean" if row["stage"] == "read" else row["stage"]
                when = ("reused" if stage in report.get("reused", ()) else "in clean"
                        if row["stage"] == "read" else
                        f"{row['seconds'] if row['seconds'] is not None else '-':>8} s")
                say(f"{row['stage']:<14} {row['docs_in']:>7} -> {row['docs_out']:>7} docs "
                    f"{when:>10}")
        say(f"report: {report['path']}")


if __name__ == "__main__":
    try:
        main()
    except LokiError as err:
        print(f"loki filter: error: {err}", file=sys.stderr)
        sys.exit(2)
