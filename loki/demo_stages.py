"""The stages of ``loki demo``, in order: each is a function ``cfg -> summary dict`` that runs one
step of the recipe through the same library calls as its ``loki`` command, and whose summary's
``"line"`` is what the console shows (``loki/demo.py`` runs them, skips finished ones and times
them; the training run folders they move aside and read back are ``loki/demo_run.py``'s)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loki.demo_run import archive, archive_unresumable, current_files, sample_text, val_losses
from loki.errors import LokiError

if TYPE_CHECKING:
    from loki.demo import DemoConfig


def _stage_corpus(cfg: DemoConfig) -> dict[str, Any]:
    from loki.data.demo_corpus import fetch_demo_corpus

    paths = fetch_demo_corpus(cfg.root)
    docs = sum(1 for p in paths for _ in p.open())
    mb = sum(p.stat().st_size for p in paths) / 1e6
    return {"documents": docs, "megabytes": round(mb, 2), "files": [str(p) for p in paths],
            "line": f"{docs:,} documents, {mb:.1f} MB of JSONL in {Path(cfg.root) / 'raw'}"}


def _stage_tasks(cfg: DemoConfig) -> dict[str, Any]:
    from loki.eval.demo_tasks import write_demo_tasks

    manifest = write_demo_tasks([Path(cfg.root) / "raw"], Path(cfg.root) / "tasks")
    tests = ", ".join(f"{name.removeprefix('loki_demo_')} {c['test']}"
                      for name, c in manifest["counts"].items())
    return {"counts": manifest["counts"], "held_out_documents": len(manifest["held_out_ids"]),
            "line": f"test items: {tests}, from {len(manifest['held_out_ids'])} held-out "
                    "documents"}


def _stage_filter(cfg: DemoConfig) -> dict[str, Any]:
    from loki.filtering.cli import main as filter_main

    filter_main(["--config", cfg.filter_config])
    report = json.loads((Path(cfg.root) / "filtered" / "filter_report.json").read_text())
    stages = [r for r in report.get("stages", []) if "docs_out" in r]
    if not stages:
        return {"line": "no stage reported documents"}
    contaminated = sum((report.get("benchmark_hits_per_task") or {}).values())
    return {"docs_in": stages[0]["docs_in"], "docs_out": stages[-1]["docs_out"],
            "line": f"{stages[0]['docs_in']:,} -> {stages[-1]['docs_out']:,} documents through "
                    f"{len(stages)} stages; {contaminated} benchmark 13-gram hits removed"}


def _stage_tokenizer(cfg: DemoConfig) -> dict[str, Any]:
    from loki.tokenizer_cli import main as tokenizer_main

    tokenizer_main(["prune", "--config", cfg.tokenizer_config])
    report = json.loads((Path(cfg.root) / "tokenizer" / "prune_report.json").read_text())
    ratio = (report.get("bytes_per_token_held_out") or {}).get("ratio")
    return {**{k: report[k] for k in ("vocab_size", "vocab_hash") if k in report},
            "line": f"cl100k_base pruned to {report.get('vocab_size'):,} tokens"
                    + (f", {ratio:.2f}x its bytes/token on held-out text" if ratio else "")}


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
    return {"tokens": counts,
            "line": "tokens: " + ", ".join(f"{k} {v:,}" for k, v in counts.items())}


def _stage_teachers(cfg: DemoConfig) -> dict[str, Any]:
    from loki.distill.smollm import prepare_smollm

    folder = prepare_smollm(Path(cfg.teachers_root))
    return {"smollm2": str(folder),
            "line": f"SmolLM2-135M-Instruct (Apache-2.0) ready in {folder}"}


def _stage_synthetic(cfg: DemoConfig) -> dict[str, Any]:
    from loki.distill.synthetic import topics_from_documents, write_synthetic
    from loki.distill.teachers import HFTeacher, Sampling
    from loki.filtering.decontam import BenchmarkIndex

    root = Path(cfg.root)
    teacher = HFTeacher(
        str(Path(cfg.teachers_root) / "smollm2-135m-instruct"), name="smollm2-135m",
        dtype=teacher_dtype(cfg), batch_size=32,  # one batched generate call (KV cache) for all passages
        sampling=Sampling(max_new_tokens=cfg.synthetic_tokens, temperature=0.7, top_p=0.9),
    )
    index_path = root / "filter_work" / "decontam" / "index.npz"
    index = BenchmarkIndex.load(str(index_path)) if index_path.is_file() else None
    topics = topics_from_documents(sorted((root / "raw").glob("enwiki*.jsonl")),
                                   cfg.synthetic_docs)
    report = write_synthetic(teacher, topics, root / "synthetic", index=index)
    return {**{k: report[k] for k in ("written", "benchmark_copy", "too_short")},
            "line": f"{report['written']} passages from {teacher.name} "
                    f"({report['benchmark_copy']} benchmark copies and {report['too_short']} "
                    "too short dropped)"}


def precision_args(cfg: DemoConfig) -> list[str]:
    from loki.cpu import resolve_bf16

    return ["--trainer.precision", "bf16-mixed"] if resolve_bf16(cfg.bf16) else []


def teacher_dtype(cfg: DemoConfig) -> str:
    from loki.cpu import resolve_bf16

    return "bfloat16" if resolve_bf16(cfg.bf16) else "float32"


def _stage_teacher(cfg: DemoConfig) -> dict[str, Any]:
    from loki.cli import lightning_main

    run = Path("runs/demo-teacher")
    last = run / "checkpoints" / "last.ckpt"
    archive_unresumable(run)
    args = ["fit", "--config", cfg.teacher_config, *precision_args(cfg)]
    if last.is_file():
        args += ["--ckpt_path", str(last)]
    lightning_main(args)
    val = val_losses(run)
    line = f"validation loss {val[0][1]:.2f} -> {val[-1][1]:.2f}" if val else "trained"
    return {"checkpoint": str(last), "val_loss": val, "line": f"Loki teacher: {line}"}


def _stage_distill(cfg: DemoConfig) -> dict[str, Any]:
    from loki.distill.cli import main as distill_main

    distill_main(["build", "--config", cfg.distill_config])
    report = json.loads((Path(cfg.root) / "distill" / "cache" / "report.json").read_text())
    prompts = report.get("ground_truth", {}).get("candidates", 0)
    teachers = "; ".join(
        f"{name} {counts.get('kept', 0)} kept, {counts.get('regenerations', 0)} regenerated, "
        f"{counts.get('dropped_benchmark', 0)} benchmark copies dropped"
        for name, counts in report.items() if isinstance(counts, dict) and name != "ground_truth")
    return {"report": report, "line": f"candidate cache: {prompts} prompts; {teachers}"}


def _stage_fit(cfg: DemoConfig) -> dict[str, Any]:
    from loki.cli import lightning_main

    run = Path(cfg.run_dir)
    details = []
    if "fit" in cfg.redo and (moved := archive(run)):
        details.append(f"previous run moved to {moved}")
    elif moved := archive_unresumable(run):
        details.append(f"previous run stopped before its first checkpoint: moved to {moved}")
    args = ["fit", "--config", cfg.fit_config, "--trainer.default_root_dir", str(run),
            *precision_args(cfg)]
    last = run / "checkpoints" / "last.ckpt"
    if last.is_file():
        details.append(f"resumed from {last}")
        args += ["--ckpt_path", str(last)]
    if cfg.inject_spike:
        # A real fault for the real detector: noise on the weights at `spike_step` (see
        # callbacks/fault_injection.py); the rollback callback in the config must catch it.
        args += ["--trainer.callbacks+=callbacks.fault_injection.InjectLossSpike",
                 f"--trainer.callbacks.at_steps=[{cfg.spike_step}]"]
    lightning_main(args + list(cfg.fit_args))
    if not last.is_file():
        raise LokiError(f"training finished without writing {last}; check the checkpoint "
                        f"callback in {cfg.fit_config}")
    val = val_losses(run)
    events = current_files(run, "rollback-events.jsonl")
    rollbacks = [json.loads(line) for p in events for line in p.read_text().splitlines()]
    for e in rollbacks:
        details.append(f"rollback {e['rollback']}: spike at step {e['spike_step']} "
                       f"({e['reason']}) -> back to step {e['target_step']}, new data seed "
                       f"{e['seed']}")
    sample = sample_text(last, cfg.sample_prompt)
    details.append(f"sample: {sample!r}")
    line = (f"validation loss {val[0][1]:.2f} (step {val[0][0]}) -> {val[-1][1]:.2f} "
            f"(step {val[-1][0]})" if val else "trained")
    return {"checkpoint": str(last), "val_loss": val, "sample": sample,
            "rollbacks": len(rollbacks), "details": details,
            "line": line + (f"; {len(rollbacks)} rollback(s)" if rollbacks else "")}


def _stage_compare(cfg: DemoConfig) -> dict[str, Any]:
    """The trained student against its step-0 checkpoint on every demo task, item by item."""
    from loki.eval.compare import main as compare_main

    run = Path(cfg.run_dir)
    step0 = run / "checkpoints" / "step-0.ckpt"
    evaluated = run / "eval" / "evaluated.ckpt"
    trained = evaluated if evaluated.is_file() else run / "checkpoints" / "last.ckpt"
    if not step0.is_file():
        raise LokiError(f"no step-0 checkpoint at {step0}: the fit config needs the "
                        "callbacks.initial_checkpoint.InitialCheckpoint callback (then "
                        "--redo [fit])")
    compare_main(["--a", f"[{step0}]", "--b", f"[{trained}]", "--suite.preset", "demo",
                  "--suite.offline", "true", "--suite.data_dir", str(Path(cfg.root) / "tasks"),
                  "--device", "cpu", "--batch_size", "32", "--output_dir", str(run / "compare")])
    tasks = json.loads((run / "compare" / "compare.json").read_text())["tasks"]
    label, r = max(tasks.items(), key=lambda kv: kv[1]["diff"])
    return {"tasks": tasks,
            "line": f"{label}: step 0 {r['mean_a']:.1%} -> trained {r['mean_b']:.1%} "
                    f"({100 * r['diff']:+.1f} points, {r['confidence']:.0%} CI "
                    f"[{100 * r['ci_low']:+.1f}, {100 * r['ci_high']:+.1f}])"}


def _stage_export(cfg: DemoConfig) -> dict[str, Any]:
    from loki.export.hf import export_hf

    run = Path(cfg.run_dir)
    manifest = export_hf(run, run / "hf", check=True)  # the run's last checkpoint
    diff = manifest["check"]["max_abs_logit_diff"]
    return {"output": str(run / "hf"), "max_abs_logit_diff": diff,
            "line": f"{run / 'hf'} (AutoModelForCausalLM, trust_remote_code=True); max abs "
                    f"logit difference vs Loki {diff:.2g}"}


def _stage_probe(cfg: DemoConfig) -> dict[str, Any]:
    from loki.eval.probes import main as probe_main

    run = Path(cfg.run_dir)
    evaluated = run / "eval" / "evaluated.ckpt"
    checkpoint = evaluated if evaluated.is_file() else run / "checkpoints" / "last.ckpt"
    probe_main(["--checkpoint", str(checkpoint), "--output_dir", str(run / "probes"),
                "--device", "cpu"])
    result = json.loads((run / "probes" / "probes.json").read_text())
    share = result["bias"]["stereotype_consistent_share"]
    return {"checkpoint": str(checkpoint), "stereotype_consistent_share": share,
            "line": f"{len(result.get('prompts', {}))} probe prompts; bias template: {share:.0%} "
                    "of orderings resolved the stereotyped way"}


def _stage_report(cfg: DemoConfig) -> dict[str, Any]:
    from loki.report import build_report

    run = Path(cfg.run_dir)
    build_report(run, cfg.root)  # the Table-1 Markdown is eval/results.md by default
    return {"report": str(run / "REPORT.md"), "line": f"open {run / 'REPORT.md'}"}


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
    "compare": _stage_compare,
    "export": _stage_export,
    "probe": _stage_probe,
    "report": _stage_report,
}
