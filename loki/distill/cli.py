"""``loki distill``: the teacher candidate cache, the synthetic source and the demo teacher.

    loki distill build --config experiments/distill/demo.yaml
    loki distill finalize --config experiments/distill/demo.yaml   # after cluster jobs end
    loki distill synthetic --config experiments/distill/synthetic.yaml
    loki distill prepare-smollm --root data/teachers
"""

from __future__ import annotations

import dataclasses
import sys

from loki.errors import LokiError

USAGE = ("usage: loki distill {build,finalize,synthetic,prepare-smollm} [--config FILE] "
         "[options]")
# name -> one-line help, listed by ``loki distill --help`` (each subcommand takes --help)
SUBCOMMANDS = {
    "build": "teacher candidates for distillation prompts -> a cache folder",
    "finalize": "write the cache's manifest once a cluster build's jobs have ended (same config)",
    "synthetic": "teacher passages about corpus topics -> the synthetic training source",
    "prepare-smollm": "convert the demo teacher, SmolLM2-135M-Instruct, into a teacher folder",
}


def help_text() -> str:
    """``loki distill --help``: the subcommands with their help, laid out like ``loki tokenizer
    --help`` (the subcommands themselves are dispatched by ``main``, ahead of any parser)."""
    from loki.tool_parser import tool_parser

    parser = tool_parser(prog="loki distill", description=__doc__.split("\n")[0].replace("``", ""))
    sub = parser.add_subcommands(dest="command")
    for name, help_ in SUBCOMMANDS.items():
        sub.add_subcommand(name, tool_parser(), help=help_)
    return parser.format_help().rstrip()


def parse_build(argv: list[str], prog: str, cls: type | None = None,
                description: str | None = None):
    """argv (``--config X.yaml`` plus dotted overrides) -> a ``BuildConfig`` (or ``cls``);
    ``--help`` says ``description`` (default: the class docstring)."""
    from jsonargparse import ActionConfigFile

    from loki.tool_parser import tool_parser

    if cls is None:
        from loki.distill.build_config import BuildConfig as cls

    parser = tool_parser(prog=prog, description=description or (cls.__doc__ or "").strip())
    parser.add_argument("--config", action=ActionConfigFile, help="YAML config file")
    parser.add_class_arguments(cls, nested_key=None, fail_untyped=False)
    init = parser.instantiate(parser.parse_args(argv))
    try:
        return cls(**{f.name: init.get(f.name) for f in dataclasses.fields(cls)})
    except (TypeError, ValueError) as err:
        raise LokiError(f"bad {prog} config: {err}") from err


def parse_config(path: str):
    """A ``loki distill build`` or ``synthetic`` YAML (it has ``topics``) -> its config (what
    the experiments test calls)."""
    import yaml

    if "topics" in (yaml.safe_load(open(path)) or {}):
        from loki.distill.synthetic import SyntheticConfig

        return parse_build(["--config", str(path)], "loki distill synthetic", SyntheticConfig)
    return parse_build(["--config", str(path)], "loki distill build")


def main(argv: list[str] | None = None) -> None:
    from loki.console import say  # the terminal, also while libraries write to the log

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        say(help_text())
        return
    command, rest = argv[0], argv[1:]
    if command == "prepare-smollm":
        from loki.distill.smollm import prepare_smollm
        from loki.tool_parser import tool_parser

        parser = tool_parser(prog="loki distill prepare-smollm",
                             description=SUBCOMMANDS["prepare-smollm"])
        parser.add_argument("--root", default="data/teachers",
                            help="teacher folder; the converted model goes in its "
                                 "smollm2-135m-instruct/")
        say(str(prepare_smollm(parser.parse_args(rest).root)))
        return
    if command == "synthetic":
        from loki.distill.synthetic import SyntheticConfig, run_synthetic

        cfg = parse_build(rest, "loki distill synthetic", SyntheticConfig)
        report = run_synthetic(cfg)
        if report.get("submitted"):
            say("submitted; run `loki distill synthetic` again with the same config when the "
                "jobs end")
            return
        say(describe_synthetic(cfg.output, report))
        return
    if command not in ("build", "finalize"):
        raise LokiError(f"unknown distill command {command!r}; {USAGE}")
    from loki.distill.build import build, finalize_cache

    cfg = parse_build(rest, f"loki distill {command}", description=(
        f"loki distill finalize: {SUBCOMMANDS['finalize']}." if command == "finalize" else None))
    manifest = build(cfg) if command == "build" else finalize_cache(cfg)
    if manifest.get("submitted"):
        say("submitted; run `loki distill finalize` with the same config when the jobs end")
        return
    say(describe_cache(cfg.output, manifest))


def describe_cache(output: str, manifest: dict) -> str:
    """The finished cache in a few lines: what each source gave (``report.json`` has it all)."""
    from loki.distill.build import GROUND_TRUTH

    lines = [f"candidate cache: {output} ({manifest['prompts']} prompts; counts in "
             f"{output}/report.json)"]
    report = manifest["report"]
    width = max(len(name) for name in report)
    for name, n in report.items():
        if name == GROUND_TRUTH:
            lines.append(f"  {name:<{width}}  {n['candidates']} windows; "
                         f"{n['benchmark_flagged']} match a benchmark item (kept: they are "
                         "the corpus's own text)")
            continue
        line = (f"  {name:<{width}}  {n['kept']} of {n['candidates']} kept; "
                f"{n['dropped_benchmark']} benchmark copies dropped after "
                f"{n['regenerations']} regenerations, {n['dropped_empty']} empty")
        if n["soft_targets"] or n["soft_unaligned"]:
            line += f"; soft targets for {n['soft_targets']}"
            if n["soft_unaligned"]:
                line += f" ({n['soft_unaligned']} did not align with the student's tokens)"
        lines.append(line)
    return "\n".join(lines)


def describe_synthetic(output: str, report: dict) -> str:
    """The synthetic source in one line (``synthetic_report.json`` has the teacher too)."""
    return (f"synthetic source: {report['shards']} ({report['written']} passages from "
            f"{report['topics']} topics; {report['too_short']} too short, "
            f"{report['benchmark_copy']} benchmark copies dropped after "
            f"{report['regenerations']} regenerations; counts in "
            f"{output}/synthetic_report.json)")


if __name__ == "__main__":
    try:
        main()
    except LokiError as err:
        print(f"loki distill: error: {err}", file=sys.stderr)
        sys.exit(2)
