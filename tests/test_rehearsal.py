"""The 1.4B recipe rehearsed end to end on 2 CPU processes, and the recipe's preset checked
element by element against the paper.

The rehearsal is ``experiments/loki-1.4b.yaml`` + ``experiments/rehearsal.yaml`` (sizes only,
checked below), run by ``loki fit`` itself with ``trainer.devices: 2`` (no torchrun) from a
folder holding small inputs at the recipe's relative paths: token shards of documents with a
synthetic share, the tokenizer, a candidate cache from ``loki distill build``'s code, and the six
benchmarks' files from ``loki eval prepare-data``. The first fit is killed (SIGKILL, every rank)
once its step-8 distributed checkpoint is on disk; the resume from that folder goes through an
injected NaN loss (rolled back and reseeded), distillation every 4th step, and the final one-shot
eval under FSDP2 with a Table-1 report. ``make rehearsal`` runs ``main`` with the console shown:

    python tests/test_rehearsal.py runs/rehearsal/<new folder>
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))

RECIPE = ROOT / "experiments" / "loki-1.4b.yaml"
OVERRIDE = ROOT / "experiments" / "rehearsal.yaml"
ENTRY = ROOT / "tests" / "helpers" / "loki_entry.py"
RUN = Path("runs/loki-1.4b")  # the recipe's run folder, relative to the rehearsal folder
KILL_AFTER = 8  # the first fit is killed once this step's checkpoint is complete
SPIKE_STEP = 14  # experiments/rehearsal.yaml InjectLossSpike.at_steps
TIMEOUT = 900  # per phase: generous for a loaded CI machine; a hang still ends


# ------------------------------------------------------------------ inputs
def _documents() -> tuple[list[str], list[str]]:
    """Prose paragraphs: ~5K tokens of "web" text and a ~1K-token "synthetic" share."""
    paragraphs = [p.strip() for p in Path(argparse.__file__).read_text().split("\n\n")
                  if len(p.strip()) > 200]
    return paragraphs[:40], paragraphs[40:48]


def prepare(root: Path) -> None:
    """Write the rehearsal's inputs under ``root`` at the recipe's relative paths."""
    from loki.config import LokiConfig
    from loki.data.tokenize import main as tokenize_main
    from loki.distill.build import build_shard, finalize_cache
    from loki.distill.build_config import BuildConfig
    from loki.eval.prepare_data import PAPER_TASKS, prepare_data
    from loki.model import Loki
    from loki.tokenizer import EOT, LokiTokenizer, pruned_tokenizer
    from tests.helpers.benchmarks import write_benchmark_source

    data = root / "data"
    # the tokenizer: cl100k_base pruned (to 1,000 ids here, 32k in the recipe), at its path
    base = LokiTokenizer.from_tiktoken("cl100k_base")
    kept = sorted(base.ranks, key=base.ranks.__getitem__)[:1000]
    tok_dir = data / "tokenizer" / "cl100k-32k"
    tok = pruned_tokenizer(base, kept, [EOT], "rehearsal-1k")
    tok.save(tok_dir)
    # filtered documents (the filter's output format) -> `loki tokenize` -> data/shards/<source>
    web, synthetic = _documents()
    rows = [{"id": f"w{i}", "text": t, "metadata": {"source": "web"}} for i, t in enumerate(web)]
    rows += [{"id": f"s{i}", "text": t, "metadata": {"source": "synthetic"}}
             for i, t in enumerate(synthetic)]
    filtered = data / "filtered" / "web"
    filtered.mkdir(parents=True)
    (filtered / "00000.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tokenize_main(["--inputs", json.dumps([str(filtered)]), "--output", str(data / "shards"),
                   "--tokenizer", str(tok_dir), "--shard_tokens", "2000"])
    # a small candidate cache: one Loki teacher sharing the student's tokenizer
    teacher = Loki(LokiConfig(n_layer=1, n_head=2, n_embd=32, vocab_size=tok.vocab_size,
                              block_size=64))
    (data / "teachers").mkdir()
    torch.save({"state_dict": {f"model.{k}": v for k, v in teacher.state_dict().items()},
                "hyper_parameters": {}, "loki": {"config": teacher.config.to_dict()}},
               data / "teachers" / "loki-teacher.ckpt")
    cfg = BuildConfig(
        output=str(data / "distill" / "cache"), tokenizer=str(tok_dir),
        prompts={"shards": [str(data / "shards" / "web")], "num_prompts": 32,
                 "prompt_tokens": 12, "max_new_tokens": 10},
        teachers=[{"kind": "loki", "checkpoint": str(data / "teachers" / "loki-teacher.ckpt"),
                   "name": "loki-teacher", "sampling": {"max_new_tokens": 10}}])
    build_shard(cfg)
    finalize_cache(cfg)
    # the six benchmarks, from an "export" in the hub datasets' schemas
    prepare_data(PAPER_TASKS, data / "eval", write_benchmark_source(root / "export"))


# ------------------------------------------------------------------ runs
def _fit(root: Path, phase: str, extra: list[str], stream: bool) -> subprocess.Popen:
    from tests.helpers.fit_run import launch_env

    exits = root / "exits" / phase
    exits.mkdir(parents=True)
    # A launcher's variables left in this process by in-process runs of other tests (LOCAL_RANK,
    # NODE_RANK, ...) would tell Lightning that the ranks are started externally: rank 0 would
    # then wait for a rank 1 nobody starts. `loki fit` must start its own ranks here. Likewise
    # WANDB_SERVICE, set by another test's wandb run in this process: the fits would share that
    # service (and its working folder), where the killed fit's run stays open and the resume,
    # which continues the same wandb run, would be refused as "in use".
    env = launch_env(PYTHONPATH=str(ROOT), LOKI_EXIT_DIR=str(exits), OMP_NUM_THREADS="1",
                     WANDB_MODE="offline", MASTER_PORT="29531",
                     # torchao compiles its 8-bit AdamW step: minutes of inductor on 2 CPU cores
                     TORCHDYNAMO_DISABLE="1")
    env.pop("WANDB_SERVICE", None)
    cmd = [sys.executable, str(ENTRY), "fit", "--config", str(RECIPE), "--config", str(OVERRIDE),
           *extra]
    out = None if stream else open(root / f"{phase}.log", "w")  # noqa: SIM115
    return subprocess.Popen(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _log_tail(root: Path, phase: str) -> str:
    path = root / f"{phase}.log"
    return path.read_text()[-6000:] if path.is_file() else ""


def _checkpoint(root: Path, step: int) -> Path | None:
    """The step's distributed checkpoint once complete (rank 0 writes meta.pt last)."""
    for folder in (root / RUN / "checkpoints").glob(f"*step={step}.ckpt"):
        try:
            torch.load(folder / "meta.pt", map_location="cpu", weights_only=False)
            return folder
        except Exception:  # not there yet, or still being written
            return None
    return None


def _phase(stream: bool, title: str) -> None:
    if stream:  # the runs' own lines follow on the same console
        print(f"\n== {title} ==", flush=True)


def rehearse(root: Path, stream: bool = False) -> dict:
    """Prepare, fit, kill, resume; returns the summary (see ``summarize``)."""
    from loki.console import quiet_console

    start = time.time()
    with quiet_console(root / "prepare.log"):  # datatrove's and datasets' output: in the log
        prepare(root)
    prepared = time.time()
    _phase(stream, f"first fit: killed (every rank) once its step-{KILL_AFTER} checkpoint is "
                   "complete")
    first = _fit(root, "first", [], stream)
    deadline = time.time() + TIMEOUT
    while (ckpt := _checkpoint(root, KILL_AFTER)) is None:
        if first.poll() is not None or time.time() > deadline:
            os.killpg(first.pid, signal.SIGKILL)
            raise AssertionError(f"the first fit ended (rc {first.returncode}) before its "
                                 f"step-{KILL_AFTER} checkpoint\n" + _log_tail(root, "first"))
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)  # every rank: they share the session
    first.wait()
    killed = time.time()
    _phase(stream, f"resume from {ckpt.name}: a NaN loss at step {SPIKE_STEP}, rolled back; "
                   "then the one-shot eval")
    second = _fit(root, "resume", ["--ckpt_path", str(ckpt)], stream)
    try:
        rc = second.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(second.pid, signal.SIGKILL)
        raise AssertionError("the resumed fit timed out\n" + _log_tail(root, "resume")) from None
    # the ranks Lightning started outlive rank 0 by a moment: wait for their exit records
    for _ in range(100):
        if len(list((root / "exits" / "resume").glob("rank*.json"))) >= 2:
            break
        time.sleep(0.1)
    summary = summarize(root, ckpt)
    summary.update(rc=rc, seconds={"prepare": prepared - start, "first fit": killed - prepared,
                                   "resume + eval": time.time() - killed,
                                   "total": time.time() - start})
    if rc != 0:
        raise AssertionError(f"resumed fit exited {rc}\n" + _log_tail(root, "resume"))
    return summary


def summarize(root: Path, ckpt: Path) -> dict:
    from loki.metrics_csv import read_rows

    run = root / RUN
    # one metrics history across the kill and the resume (ResumableCSVLogger)
    rows = read_rows(str(run / "csv" / "metrics.csv"))[1]
    seen = [float(r["trainer/tokens_seen"]) for r in rows if r.get("trainer/tokens_seen")]
    batch = [float(r["batch/sequences"]) for r in rows if r.get("batch/sequences")]
    # written into trainer.log_dir: the first logger's folder (WandbLogger: the run folder)
    distill = [json.loads(p.read_text()) for p in sorted(run.rglob("distill_summary.json"))]
    events = (run / "rollback" / "rollback-events.jsonl",)
    rollbacks = [json.loads(line) for p in events if p.is_file()
                 for line in p.read_text().splitlines()]
    results = run / "eval" / "results.json"
    return {
        "exits": {p.stem: json.loads(p.read_text())["code"]
                  for p in sorted((root / "exits" / "resume").glob("rank*.json"))},
        "resumed_from": ckpt.name, "distcp_files": sorted(p.name for p in ckpt.glob("*.distcp")),
        "tokens_seen": max(seen, default=0), "batch_sequences": sorted(set(batch)),
        "distill": distill[-1] if distill else None, "rollbacks": rollbacks,
        "results": json.loads(results.read_text()) if results.is_file() else None,
        "results_md": (run / "eval" / "results.md").read_text() if results.is_file() else "",
        "evaluated": run / "eval" / "evaluated.ckpt",
    }


def console(summary: dict) -> str:
    d = summary["distill"] or {}
    lines = [f"resumed from {summary['resumed_from']} ({len(summary['distcp_files'])} shards)",
             f"tokens seen {summary['tokens_seen']:.0f}; global batch (sequences) "
             f"{summary['batch_sequences']}",
             f"distillation steps {d.get('distill_steps')} (every {d.get('every_n_batches')})"]
    lines += [f"rollback {e['rollback']}: spike at step {e['spike_step']} ({e['reason']}) -> "
              f"step {e['target_step']}, seed {e['seed']}, {len(e['skipped_samples'])} samples "
              "skipped" for e in summary["rollbacks"]]
    lines += [f"rank exits {summary['exits']}", summary["results_md"],
              "wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in summary["seconds"].items())]
    return "\n".join(lines)


# ------------------------------------------------------------------ tests
@pytest.mark.slow
def test_rehearsal_of_the_cluster_recipe_on_two_cpu_processes(tmp_path):
    from callbacks.benchmark_eval import read_record
    from loki.eval.presets import PRESETS

    summary = rehearse(tmp_path)
    print(console(summary))
    # both ranks of `loki fit` (started by Lightning from the real command line) exit 0
    assert summary["exits"] == {"rank0": 0, "rank1": 0}
    assert len(summary["distcp_files"]) == 2  # a distributed checkpoint, one shard per rank
    assert summary["tokens_seen"] >= 10_000  # the stream's token budget ended the run
    # batch-size warmup: LM steps of 4 sequences, then 8; distillation steps log their prompts,
    # sized by the same warmup so that they carry an LM step's ground-truth tokens (more prompts,
    # each shorter than a sequence)
    assert {4, 8} <= set(summary["batch_sequences"])
    assert max(summary["batch_sequences"]) > 8
    assert summary["distill"]["distill_steps"] >= 3  # every 4th step after the resume too
    (event,) = summary["rollbacks"]
    assert event["spike_step"] == SPIKE_STEP and "non-finite" in event["reason"]
    assert KILL_AFTER <= event["target_step"] < SPIKE_STEP and event["skipped_samples"]
    # the one-shot eval under FSDP2: the six Table-1 rows, written once, record in the folder
    results = summary["results"]
    assert list(results["rows"]) == [r.label for r in PRESETS["paper"]]
    assert "Average" in summary["results_md"] and "MMLU (5)" in summary["results_md"]
    assert summary["evaluated"].is_dir()  # save_distributed_checkpoint: a folder of shards
    assert read_record(summary["evaluated"])["preset"] == "paper"


def _differences(base, over, path=""):
    """Keys of ``over`` whose value differs from ``base``'s (lists compared element-wise)."""
    if isinstance(over, dict) and isinstance(base, dict):
        for key, value in over.items():
            yield from _differences(base.get(key), value, f"{path}.{key}" if path else key)
    elif isinstance(over, list) and isinstance(base, list) and over and isinstance(over[0], dict):
        for i, value in enumerate(over):
            yield from _differences(base[i] if i < len(base) else None, value, f"{path}[{i}]")
    elif over != base:
        yield path


# What the rehearsal may change: sizes, counts and the CPU (accelerator, no compile).
SIZE_KEYS = {
    "model.config", "model.sharding.compile", "model.lr_schedule.warmup_tokens",
    "model.lr_schedule.decay_tokens", "data.block_size", "data.micro_batch_size",
    "data.batch_size.start", "data.batch_size.target", "data.batch_size.over_tokens",
    "data.mixture.synthetic", "data.max_tokens", "data.val_fraction", "data.val_samples",
    "data.num_workers", "trainer.accelerator", "trainer.devices",
    "trainer.strategy.init_args.data_parallel_size", "trainer.val_check_interval",
    "trainer.limit_val_batches", "trainer.log_every_n_steps",
    "every_n_train_steps", "window_size", "snapshot_every_n_steps", "rollback_window_tokens",
    "suite.limit", "batch_size", "max_length",
}


def test_rehearsal_changes_only_sizes():
    base, over = (yaml.safe_load(p.read_text()) for p in (RECIPE, OVERRIDE))
    base_cbs, over_cbs = base["trainer"]["callbacks"], over["trainer"]["callbacks"]
    # the recipe's callbacks, in its order, then the fault injection only
    assert [c["class_path"] for c in over_cbs] == (
        [c["class_path"] for c in base_cbs] + ["callbacks.fault_injection.InjectLossSpike"])
    changed = set()
    for path in _differences(base, over):
        if not path.startswith("trainer.callbacks["):
            changed.add(path)
        elif path != f"trainer.callbacks[{len(base_cbs)}]":  # the added InjectLossSpike
            changed.add(path.split("init_args.", 1)[1])  # the callback's own key
    assert changed <= SIZE_KEYS, changed - SIZE_KEYS
    for b, o in zip(base_cbs, over_cbs, strict=False):  # no recipe setting dropped
        assert set(b.get("init_args", {})) == set(o.get("init_args", {})), b["class_path"]


def main(argv: list[str] | None = None) -> None:
    root = Path((argv or sys.argv[1:] or [f"runs/rehearsal/{time.strftime('%Y%m%d-%H%M%S')}"])[0])
    root = root.resolve()
    if root.exists() and any(root.iterdir()):
        raise SystemExit(f"{root} is not empty; give the rehearsal a new folder")
    root.mkdir(parents=True, exist_ok=True)
    summary = rehearse(root, stream=True)
    print("\n== rehearsal summary ==\n" + console(summary))
    ok = summary["exits"] == {"rank0": 0, "rank1": 0} and summary["results"] is not None
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
