"""``loki demo``: the whole recipe on the embedded demo corpus, one stage after another.

Each stage prints one line when it starts and its wall time when it ends, and leaves a marker in
``<run_dir>/stages/`` with a summary: a second run skips finished stages (and training resumes
from its last checkpoint), so an interrupted demo picks up where it stopped. ``--redo`` names
stages to run again; ``--inject_spike`` arms a fault that the loss-spike rollback must catch.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loki.errors import LokiError


@dataclass
class DemoConfig:
    """What ``make demo`` runs."""

    root: str = "data/demo"
    """Demo data: raw corpus, tasks, filtered text, tokenizer, shards, teacher cache."""
    run_dir: str = "runs/demo"
    """Training run, evaluation, probes and the report."""
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    """Stages to run, in order (a subset of the known stages)."""
    redo: list[str] = field(default_factory=list)
    """Stages to run again even when their marker says they are done."""
    filter_config: str = "experiments/data/demo.yaml"
    """``loki filter`` config of the demo corpus."""
    tokenizer_config: str = "experiments/tokenizer/demo.yaml"
    """``loki tokenizer prune`` config of the demo tokenizer."""
    teachers_root: str = "data/teachers"
    """Where the registry-shipped teacher (SmolLM2-135M-Instruct) is converted to."""
    synthetic_docs: int = 48
    """Machine-generated passages written by the demo teacher (tagged ``synthetic``)."""
    synthetic_tokens: int = 160
    """Teacher tokens per synthetic passage."""
    teacher_config: str = "experiments/distill/demo-teacher.yaml"
    """``loki fit`` config of the Loki teacher (trained before the student)."""
    distill_config: str = "experiments/distill/demo.yaml"
    """``loki distill build`` config of the candidate cache."""
    fit_config: str = "experiments/small-cpu.yaml"
    """LightningCLI config of the training run."""
    fit_args: list[str] = field(default_factory=list)
    """Extra ``loki fit`` arguments, e.g. ``["--trainer.max_steps", "50"]``."""
    inject_spike: bool = False
    """Arm the fault-injection callback: a loss spike the rollback must detect and undo."""
    spike_step: int = 202
    """Step at which ``inject_spike`` perturbs the weights (not a multiple of 4: distillation
    steps are scored by another objective and not watched for spikes)."""
    sample_prompt: str = "The history of the"
    """Prompt of the sample printed after training."""


def _stage_corpus(cfg: DemoConfig) -> dict[str, Any]:
    from loki.data.demo_corpus import fetch_demo_corpus

    paths = fetch_demo_corpus(cfg.root)
    docs = sum(1 for p in paths for _ in p.open())
    mb = sum(p.stat().st_size for p in paths) / 1e6
    print(f"  {docs} documents, {mb:.1f} MB of JSONL in {Path(cfg.root) / 'raw'}")
    return {"documents": docs, "megabytes": round(mb, 2), "files": [str(p) for p in paths]}


def _stage_tasks(cfg: DemoConfig) -> dict[str, Any]:
    from loki.eval.demo_tasks import write_demo_tasks

    manifest = write_demo_tasks([Path(cfg.root) / "raw"], Path(cfg.root) / "tasks")
    print(f"  demo tasks: {manifest['counts']} (held-out documents never reach training)")
    return {"counts": manifest["counts"], "held_out_documents": len(manifest["held_out_ids"])}


def _stage_filter(cfg: DemoConfig) -> dict[str, Any]:
    from loki.filtering.cli import main as filter_main

    filter_main(["--config", cfg.filter_config])
    report = json.loads((Path(cfg.root) / "filtered" / "filter_report.json").read_text())
    stages = [r for r in report.get("stages", []) if "docs_out" in r]
    return {"docs_in": stages[0]["docs_in"], "docs_out": stages[-1]["docs_out"]} if stages else {}


def _stage_tokenizer(cfg: DemoConfig) -> dict[str, Any]:
    from loki.tokenizer_cli import main as tokenizer_main

    tokenizer_main(["prune", "--config", cfg.tokenizer_config])
    report = json.loads((Path(cfg.root) / "tokenizer" / "prune_report.json").read_text())
    return {k: report[k] for k in ("vocab_size", "vocab_hash") if k in report}


def _stage_tokenize(cfg: DemoConfig) -> dict[str, Any]:
    from loki.data.tokenize import main as tokenize_main

    root = Path(cfg.root)
    inputs = [str(root / "filtered")]
    if (root / "synthetic").is_dir():
        inputs.append(str(root / "synthetic"))
    tokenize_main(["--inputs", json.dumps(inputs), "--output", str(root / "shards"),
                   "--tokenizer", str(root / "tokenizer")])
    manifests = sorted((root / "shards").glob("*/manifest.json"))
    counts = {m.parent.name: json.loads(m.read_text())["num_tokens"] for m in manifests}
    print(f"  token shards per source: {counts}")
    return {"tokens": counts}


def _stage_teachers(cfg: DemoConfig) -> dict[str, Any]:
    from loki.distill.smollm import prepare_smollm

    folder = prepare_smollm(Path(cfg.teachers_root))
    print(f"  SmolLM2-135M-Instruct (Apache-2.0) converted to {folder}")
    return {"smollm2": str(folder)}


def _stage_synthetic(cfg: DemoConfig) -> dict[str, Any]:
    from loki.distill.synthetic import topics_from_documents, write_synthetic
    from loki.distill.teachers import HFTeacher, Sampling
    from loki.filtering.decontam import BenchmarkIndex

    root = Path(cfg.root)
    teacher = HFTeacher(
        str(Path(cfg.teachers_root) / "smollm2-135m-instruct"), name="smollm2-135m",
        dtype="float32", batch_size=16,
        sampling=Sampling(max_new_tokens=cfg.synthetic_tokens, temperature=0.7, top_p=0.9),
    )
    index_path = root / "filter_work" / "decontam" / "index.npz"
    index = BenchmarkIndex.load(str(index_path)) if index_path.is_file() else None
    topics = topics_from_documents(sorted((root / "raw").glob("enwiki*.jsonl")),
                                   cfg.synthetic_docs)
    report = write_synthetic(teacher, topics, root / "synthetic", index=index)
    print(f"  {report['written']} synthetic documents from {teacher.name} "
          f"({report['benchmark_copy']} benchmark copies and {report['too_short']} short dropped)")
    return {k: report[k] for k in ("written", "benchmark_copy", "too_short")}


def _stage_teacher(cfg: DemoConfig) -> dict[str, Any]:
    from loki.cli import lightning_main

    run = Path("runs/demo-teacher")
    last = run / "checkpoints" / "last.ckpt"
    args = ["fit", "--config", cfg.teacher_config]
    if last.is_file():
        args += ["--ckpt_path", str(last)]
    lightning_main(args)
    val = _val_losses(run)
    if val:
        print(f"  teacher validation loss: {val[0][1]:.3f} -> {val[-1][1]:.3f}")
    return {"checkpoint": str(last), "val_loss": val}


def _stage_distill(cfg: DemoConfig) -> dict[str, Any]:
    from loki.distill.cli import main as distill_main

    distill_main(["build", "--config", cfg.distill_config])
    report = json.loads((Path(cfg.root) / "distill" / "cache" / "report.json").read_text())
    print("  candidate cache: " + json.dumps(report)[:300])
    return {"report": report}


def _stage_fit(cfg: DemoConfig) -> dict[str, Any]:
    from loki.cli import lightning_main

    run = Path(cfg.run_dir)
    if "fit" in cfg.redo:
        _archive(run)
    args = ["fit", "--config", cfg.fit_config, "--trainer.default_root_dir", str(run)]
    last = run / "checkpoints" / "last.ckpt"
    if last.is_file():
        print(f"  resuming from {last}")
        args += ["--ckpt_path", str(last)]
    if cfg.inject_spike:
        # A real fault for the real detector: noise on the weights at step 60 (see
        # callbacks/fault_injection.py); the rollback callback in the config must catch it.
        args += ["--trainer.callbacks+=callbacks.fault_injection.InjectLossSpike",
                 f"--trainer.callbacks.at_steps=[{cfg.spike_step}]"]
    lightning_main(args + list(cfg.fit_args))
    if not last.is_file():
        raise LokiError(f"training finished without writing {last}; check the checkpoint "
                        f"callback in {cfg.fit_config}")
    val = _val_losses(run)
    if val:
        print("  validation loss by step: "
              + ", ".join(f"{step}: {loss:.3f}" for step, loss in val))
    events = _current(run, "rollback-events.jsonl")
    rollbacks = [json.loads(line) for p in events for line in p.read_text().splitlines()]
    for e in rollbacks:
        print(f"  rollback {e['rollback']}: spike at step {e['spike_step']} ({e['reason']}) -> "
              f"back to step {e['target_step']}, new data seed {e['seed']}")
    sample = _sample(last, cfg.sample_prompt)
    print(f"  sample: {sample!r}")
    return {"checkpoint": str(last), "val_loss": val, "sample": sample,
            "rollbacks": len(rollbacks)}


def _archive(run: Path) -> None:
    """Move a previous training run's files aside (nothing is deleted) so a redo starts afresh."""
    parts = [run / name for name in RUN_PARTS if (run / name).exists()]
    if not parts:
        return
    dest = run / "archive" / time.strftime("%Y%m%d-%H%M%S")
    dest.mkdir(parents=True)
    for part in parts:
        part.rename(dest / part.name)
    print(f"  previous run moved to {dest}")


RUN_PARTS = ("checkpoints", "csv", "wandb", "eval", "rollback", "probes", "REPORT.md", "hf")


def _current(run: Path, name: str) -> list[Path]:
    """Files called ``name`` under the run folder, leaving out archived earlier runs."""
    return sorted(p for p in run.rglob(name) if "archive" not in p.relative_to(run).parts)


def _val_losses(run: Path) -> list[tuple[int, float]]:
    """(step, val/loss) pairs from the CSV logger's metrics files under the run folder."""
    out: dict[int, float] = {}
    for path in _current(run, "metrics.csv"):
        with path.open() as f:
            for row in csv.DictReader(f):
                if row.get("val/loss"):
                    out[int(row["step"])] = float(row["val/loss"])
    return sorted(out.items())


def _sample(checkpoint: Path, prompt: str, max_new_tokens: int = 40) -> str:
    import torch

    from loki.module import load_model
    from loki.tokenizer import LokiTokenizer

    model, _, hparams = load_model(checkpoint)
    tokenizer = LokiTokenizer.from_spec(hparams.get("tokenizer") or "cl100k_base")
    idx = torch.tensor([tokenizer.encode(prompt)])
    gen = torch.Generator().manual_seed(0)
    out = model.generate(idx, max_new_tokens, temperature=0.8, top_k=40, generator=gen)
    return prompt + tokenizer.decode(out[0, idx.size(1):].tolist())


def _stage_export(cfg: DemoConfig) -> dict[str, Any]:
    from loki.export.hf import export_hf

    run = Path(cfg.run_dir)
    manifest = export_hf(run, run / "hf", check=True)  # the run's last checkpoint
    diff = manifest["check"]["max_abs_logit_diff"]
    print(f"  transformers export: {run / 'hf'} (AutoModelForCausalLM, trust_remote_code=True); "
          f"max abs logit difference vs Loki {diff:.2g}")
    return {"output": str(run / "hf"), "max_abs_logit_diff": diff}


def _stage_probe(cfg: DemoConfig) -> dict[str, Any]:
    from loki.eval.probes import main as probe_main

    run = Path(cfg.run_dir)
    evaluated = run / "eval" / "evaluated.ckpt"
    checkpoint = evaluated if evaluated.is_file() else run / "checkpoints" / "last.ckpt"
    probe_main(["--checkpoint", str(checkpoint), "--output_dir", str(run / "probes"),
                "--device", "cpu"])
    result = json.loads((run / "probes" / "probes.json").read_text())
    share = result["bias"]["stereotype_consistent_share"]
    print(f"  bias template: {share:.0%} of orderings resolved the stereotyped way")
    return {"checkpoint": str(checkpoint), "stereotype_consistent_share": share}


def _stage_report(cfg: DemoConfig) -> dict[str, Any]:
    from loki.report import build_report

    run = Path(cfg.run_dir)
    build_report(run, cfg.root, table1_md=str(run / "eval" / "results.md"))
    print(f"  report: {run / 'REPORT.md'}")
    return {"report": str(run / "REPORT.md")}


STAGES: dict[str, Callable[[DemoConfig], dict[str, Any]]] = {
    "corpus": _stage_corpus,
    "tasks": _stage_tasks,
    "filter": _stage_filter,
    "tokenizer": _stage_tokenizer,
    "teachers": _stage_teachers,
    "synthetic": _stage_synthetic,
    "tokenize": _stage_tokenize,
    "teacher": _stage_teacher,
    "distill": _stage_distill,
    "fit": _stage_fit,
    "export": _stage_export,
    "probe": _stage_probe,
    "report": _stage_report,
}


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    unknown = [s for s in [*cfg.stages, *cfg.redo] if s not in STAGES]
    if unknown:
        raise LokiError(f"unknown demo stage(s) {', '.join(unknown)}; known: {', '.join(STAGES)}")
    markers = Path(cfg.run_dir) / "stages"
    markers.mkdir(parents=True, exist_ok=True)
    if cfg.inject_spike and (markers / "fit.json").is_file() and "fit" not in cfg.redo:
        raise LokiError("the demo run was already trained without the injected spike; add "
                        "--redo [fit,probe,report] to train it again with the spike")
    timings: dict[str, float] = {}
    summaries: dict[str, Any] = {}
    for i, name in enumerate(cfg.stages, 1):
        marker = markers / f"{name}.json"
        header = f"[{i}/{len(cfg.stages)}] {name}"
        if marker.is_file() and name not in cfg.redo:
            done = json.loads(marker.read_text())
            print(f"{header}: done earlier ({done['seconds']:.0f} s), skipped")
            summaries[name] = done["summary"]
            continue
        print(f"{header} ...", flush=True)
        started = time.perf_counter()
        summary = STAGES[name](cfg)
        seconds = time.perf_counter() - started
        timings[name] = seconds
        summaries[name] = summary
        marker.write_text(json.dumps({"seconds": seconds, "summary": summary}, indent=2))
        print(f"{header}: {seconds:.1f} s", flush=True)
    if timings:
        print("time per stage: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
              + f"; total {sum(timings.values()):.0f} s")
    else:
        print(f"every stage was done earlier; the report is {Path(cfg.run_dir) / 'REPORT.md'} "
              "(--redo [stage,...] runs stages again)")
    return summaries


def _parser():
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(prog="loki demo", description=__doc__.split("\n\n")[0],
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
    print("loki demo: " + json.dumps(asdict(cfg)))
    run_demo(cfg)
