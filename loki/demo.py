"""``loki demo``: the whole recipe on the embedded demo corpus, one stage after another.

Each stage prints one line on the console when it ends: its key figures and its wall time
(training stages draw a progress bar while they run). Libraries' logs and warnings go to
``<run_dir>/demo.log`` (``--verbose true`` keeps them on the console). Each stage leaves a marker
in ``<run_dir>/stages/`` with a summary: a second run skips finished stages (and training resumes
from its last checkpoint), so an interrupted demo picks up where it stopped. ``--redo`` names
stages to run again, and every stage after the first of them runs again too (each reads what
the stages before it wrote, and ``--redo [fit]`` moves the earlier run's files aside);
``--inject_spike`` arms a fault that the loss-spike rollback must catch.

The stages themselves are in ``loki/demo_stages.py``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from loki.console import muted, quiet_console, say, stream
from loki.demo_stages import STAGES
from loki.errors import LokiError


@dataclass
class DemoConfig:
    """What ``make demo`` runs."""

    root: str = "data/demo"
    """Folder of the demo data: raw corpus, eval tasks, filtered text, tokenizer, token shards and
    the teacher cache."""
    run_dir: str = "runs/demo"
    """Folder of the training run, its evaluation, probes, report and demo.log."""
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    """Stages to run, in order (a subset of the known stages)."""
    redo: list[str] = field(default_factory=list)
    """Stages to run again even when their marker says they are done; the stages after the
    first of them run again too."""
    filter_config: str = "experiments/data/demo.yaml"
    """The ``loki filter`` config that cleans the demo corpus."""
    tokenizer_config: str = "experiments/tokenizer/demo.yaml"
    """The ``loki tokenizer prune`` config of the demo tokenizer."""
    teachers_root: str = "data/teachers"
    """Where the registry-shipped teacher (SmolLM2-135M-Instruct) is converted to."""
    synthetic_docs: int = 32
    """Machine-generated passages written by the demo teacher (tagged ``synthetic``)."""
    synthetic_tokens: int = 128
    """Teacher tokens per synthetic passage."""
    teacher_config: str = "experiments/distill/demo-teacher.yaml"
    """The ``loki fit`` config of the Loki teacher (trained before the student)."""
    distill_config: str = "experiments/distill/demo.yaml"
    """The ``loki distill build`` config of the teacher candidate cache."""
    fit_config: str = "experiments/small-cpu.yaml"
    """The ``loki fit`` (LightningCLI) config of the student's training run."""
    bf16: bool | Literal["auto"] = "auto"
    """bf16 autocast for the two fits and bf16 weights for the synthetic-text teacher; auto: on
    where the CPU multiplies bf16 natively (AMX or AVX512-BF16, ~1.5x faster than fp32 there),
    off elsewhere (emulated bf16 is slower than fp32). Evaluation always runs in fp32."""
    fit_args: list[str] = field(default_factory=list)
    """Extra ``loki fit`` arguments for the student's run, e.g. ``[--trainer.max_steps=50]``."""
    inject_spike: bool = False
    """Arm the fault-injection callback: a loss spike the rollback must detect and undo."""
    spike_step: int = 202
    """Step at which ``inject_spike`` perturbs the weights (not a multiple of 4: distillation
    steps are scored by another objective and not watched for spikes)."""
    sample_prompt: str = "The history of the"
    """Prompt of the sample printed after training."""
    verbose: bool = False
    """Keep libraries' logs and warnings on the console instead of ``<run_dir>/demo.log``."""


# Stages that only read the trained run in run_dir.
_READ_THE_RUN = {"compare", "export", "probe", "report"}


def check_demo(cfg: DemoConfig) -> None:
    """What is wrong with the command line, before the console's first line or any write."""
    unknown = [s for s in [*cfg.stages, *cfg.redo] if s not in STAGES]
    if unknown:
        raise LokiError(f"unknown demo stage(s) {', '.join(unknown)}; known: {', '.join(STAGES)}")
    if set(cfg.stages) <= _READ_THE_RUN and not Path(cfg.run_dir).is_dir():  # a typo: no new one
        raise LokiError(f"run folder {cfg.run_dir} not found: the stages {', '.join(cfg.stages)} "
                        "read the demo run that the fit stage trains; fix --run_dir, or include "
                        "fit in --stages")


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    check_demo(cfg)
    markers = Path(cfg.run_dir) / "stages"
    later = stages_after_redo(cfg.stages, cfg.redo)
    cfg = replace(cfg, redo=[*cfg.redo, *later])
    if cfg.inject_spike and (markers / "fit.json").is_file() and "fit" not in cfg.redo:
        raise LokiError("the demo run was already trained without the injected spike; add "
                        "--redo [fit] to train it again with the spike")
    markers.mkdir(parents=True, exist_ok=True)
    if later:
        first = next(s for s in cfg.stages if s in cfg.redo)
        say(f"--redo from {first} on: {', '.join(later)} also run again")
    timings: dict[str, float] = {}
    summaries: dict[str, Any] = {}
    width = max(len(s) for s in cfg.stages)
    for i, name in enumerate(cfg.stages, 1):
        marker = markers / f"{name}.json"
        header = f"[{i:>{len(str(len(cfg.stages)))}}/{len(cfg.stages)}] {name:<{width}}"
        if marker.is_file() and name not in cfg.redo:
            done = json.loads(marker.read_text())
            say(f"{header}  done earlier ({done['seconds']:.1f} s), skipped")
            summaries[name] = done["summary"]
            continue
        if name in _OWN_PROGRESS_BAR:
            say(f"{header}  ...")
        with _Ticker(header, name not in _OWN_PROGRESS_BAR), muted():
            started = time.perf_counter()
            try:
                summary = STAGES[name](cfg)
            except SystemExit:
                from loki.resume import fit_was_interrupted

                if fit_was_interrupted():  # Lightning's shutdown after Ctrl-C exits with 1
                    raise KeyboardInterrupt from None
                raise
            seconds = time.perf_counter() - started
        timings[name] = seconds
        summaries[name] = summary
        _write_atomic(marker, json.dumps({"seconds": seconds, "summary": summary}, indent=2))
        say(f"{header}  {summary.get('line', 'done')}  ({seconds:.1f} s)")
        for detail in summary.get("details", []):
            say(f"{' ' * len(header)}  {detail}")
    if timings:
        say("time per stage: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
            + f"; total {sum(timings.values()):.1f} s")
    else:
        say(f"every stage was done earlier; the report is {Path(cfg.run_dir) / 'REPORT.md'} "
            "(--redo [stage,...] runs stages again)")
    return summaries


def stages_after_redo(stages: list[str], redo: list[str]) -> list[str]:
    """The stages of ``stages`` after the first one named in ``redo``, not named in it: they
    run again too, since their markers would keep outputs made from what the redo replaces."""
    first = min((stages.index(s) for s in redo if s in stages), default=len(stages))
    return [s for s in stages[first + 1:] if s not in redo]


# Stages that run Lightning, whose progress bar (callbacks.console_progress) shows progress.
_OWN_PROGRESS_BAR = {"teacher", "fit"}


class _Ticker:
    """On a terminal, redraw ``<header>  running, 12 s`` every second while a stage without a
    progress bar of its own runs (a long silent stage looks like a hung one); nothing when the
    console is a file or a pipe."""

    def __init__(self, header: str, enabled: bool) -> None:
        self.header = header
        self.enabled = enabled and stream().isatty()

    def __enter__(self) -> _Ticker:
        if self.enabled:
            import threading

            self.stop = threading.Event()
            self.thread = threading.Thread(target=self._run, daemon=True)
            self.thread.start()
        return self

    def _run(self) -> None:
        started = time.perf_counter()
        while not self.stop.wait(1.0):
            stream().write(f"\r{self.header}  running, {time.perf_counter() - started:.0f} s")
            stream().flush()

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.stop.set()
            self.thread.join()
            stream().write("\r\033[K")  # clear the ticker's line for the stage's own line
            stream().flush()


def _precision_line(cfg: DemoConfig) -> str:
    from loki.cpu import native_bf16, resolve_bf16

    if not resolve_bf16(cfg.bf16):
        why = "--bf16 false" if cfg.bf16 is False else "this CPU has no native bf16 matmuls"
        return f"precision: fp32 ({why})"
    why = "this CPU multiplies bf16 natively" if native_bf16() else "--bf16 true"
    return f"precision: bf16 autocast for training and sampling ({why}); evaluation in fp32"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _parser():
    from jsonargparse import ActionConfigFile

    from loki.tool_parser import tool_parser

    parser = tool_parser(prog="loki demo", description=__doc__.split("\n\n")[0],
                         exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_class_arguments(DemoConfig, nested_key=None, as_group=False)
    return parser


def parse_config(path: str | Path) -> DemoConfig:
    """Read a demo YAML (used by the tests that check every experiment file)."""
    return _to_config(_parser().parse_args(["--config", str(path)]))


def _to_config(ns) -> DemoConfig:
    values = ns.as_dict()
    values.pop("config", None)
    values.pop("__path__", None)
    return DemoConfig(**values)


def main(argv: list[str] | None = None) -> None:
    from jsonargparse import ArgumentError

    try:
        cfg = _to_config(_parser().parse_args(argv))
    except ArgumentError as err:
        raise LokiError(" ".join(str(err).split())) from None
    check_demo(cfg)
    log = Path(cfg.run_dir) / "demo.log"
    with quiet_console(log, cfg.verbose, title="loki demo " + json.dumps(asdict(cfg))):
        say(f"loki demo: {len(cfg.stages)} stages; data in {cfg.root}, run in {cfg.run_dir}"
            + ("" if cfg.verbose else f"; library logs in {log} (--verbose true shows them)"))
        say(_precision_line(cfg))
        run_demo(cfg)
