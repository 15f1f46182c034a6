"""``loki compare``: two checkpoints (or two sets of seeds) on the same items, with paired
bootstrap confidence intervals per task.

The paper notes that differences between its configurations were often within run-to-run
variance. Scoring both sides on the same items and resampling the per-item differences (a paired
bootstrap) separates a real improvement from noise far better than comparing two averages with
their own, unpaired, standard errors. With several checkpoints per side (e.g. seeds), each
item's score is first averaged over the side's checkpoints.

    loki compare --a '[runs/base/checkpoints/last.ckpt]' --b '[runs/kd/checkpoints/last.ckpt]' \\
        --suite.preset demo --suite.offline true --suite.data_dir data/demo/tasks \\
        --output_dir runs/compare

Every argument and every checkpoint of both sides is checked before the first one is evaluated,
and nothing is written before that. Writes ``tasks/`` (the bound task YAMLs), then
``compare.json`` and ``compare.md`` (task, metric, items, A, B, B − A, CI, p) as a pair.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from loki import atomic
from loki._optional import require
from loki.errors import LokiError
from loki.eval.presets import BenchmarkRow, preset_rows
from loki.eval.suite import SuiteConfig
from loki.output import check_writable

DESCRIPTION = (
    "Compare two checkpoints (or two sets of seeds) on the same benchmark items: per task, each "
    "side's score, B - A, and a paired-bootstrap confidence interval and p-value. --a and --b "
    "are lists: --a '[runs/base/checkpoints/last.ckpt]'. Writes compare.json and compare.md "
    "into --output_dir and prints the table.")


def check_bootstrap(n_boot: int, confidence: float) -> None:
    if n_boot < 1:
        raise LokiError(f"--n_boot must be >= 1 (bootstrap resamples; 10000 is usual), got {n_boot}")
    if not 0 < confidence < 1:
        raise LokiError(f"--confidence is a fraction in (0, 1) such as 0.95, got {confidence}")


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, n_boot: int = 10_000, confidence: float = 0.95, seed: int = 0,
) -> dict[str, float]:
    """Mean of ``b - a`` over items, its percentile bootstrap CI (items resampled with
    replacement, the pairing kept) and a two-sided bootstrap p-value for "no difference"."""
    check_bootstrap(n_boot, confidence)
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise LokiError(f"paired scores must be two equal-length 1-D arrays, got {a.shape}, {b.shape}")
    d = b - a
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)  # (n_boot,)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    # share of resampled means on the far side of zero, doubled (0 when all agree in sign)
    p = min(1.0, 2 * min((means <= 0).mean(), (means >= 0).mean())) if d.any() else 1.0
    return {"n": int(d.size), "mean_a": float(a.mean()), "mean_b": float(b.mean()),
            "diff": float(d.mean()), "ci_low": float(lo), "ci_high": float(hi),
            "p_value": float(p), "confidence": confidence}


def item_scores(lm: Any, suite: SuiteConfig, rows: list[BenchmarkRow], tm: Any
                ) -> dict[str, dict[int, float]]:
    """Per-item metric values for every row: {row label: {doc_id: score}}; ``tm`` is the
    ``TaskManager`` that knows the rows' tasks (``loki.eval.local_tasks.task_manager``)."""
    evaluator = require("lm_eval.evaluator", "eval")
    scores: dict[str, dict[int, float]] = {}
    for shots in sorted({r.num_fewshot for r in rows}):
        group = [r for r in rows if r.num_fewshot == shots]
        out = evaluator.simple_evaluate(
            model=lm, tasks=[r.task for r in group], num_fewshot=shots, task_manager=tm,
            limit=suite.limit, bootstrap_iters=0, log_samples=True, random_seed=suite.seed,
            numpy_random_seed=suite.seed, torch_random_seed=suite.seed,
            fewshot_random_seed=suite.seed)
        for r in group:
            metric, _, filt = r.metric.partition(",")
            samples = [s for s in out["samples"].get(r.task, []) if s.get("filter") == filt]
            if not samples:
                raise LokiError(f"lm-eval logged no per-item {r.metric} for task {r.task}; "
                                "is it a group of tasks? compare its subtasks instead")
            scores[r.label] = {int(s["doc_id"]): float(s[metric]) for s in samples}
    return scores


def compare_scores(
    side_a: list[dict[str, dict[int, float]]], side_b: list[dict[str, dict[int, float]]],
    n_boot: int = 10_000, confidence: float = 0.95, seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Paired bootstrap per row; each side's per-item scores averaged over its checkpoints."""
    if not side_a or not side_b:
        raise LokiError("each side needs the scores of one checkpoint or more")
    check_bootstrap(n_boot, confidence)
    result = {}
    for label in side_a[0]:
        items = sorted(set.intersection(*(set(s[label]) for s in side_a + side_b)))
        a = np.mean([[s[label][i] for i in items] for s in side_a], axis=0)
        b = np.mean([[s[label][i] for i in items] for s in side_b], axis=0)
        result[label] = paired_bootstrap(a, b, n_boot, confidence, seed)
    return result


def render_markdown(result: dict[str, dict[str, float]], names: tuple[str, str]) -> str:
    pct = int(round(100 * next(iter(result.values()))["confidence"])) if result else 95
    head = f"| task | items | {names[0]} | {names[1]} | B − A | {pct}% CI | p |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for label, r in result.items():
        lines.append(
            f"| {label} | {r['n']} | {100 * r['mean_a']:.2f} | {100 * r['mean_b']:.2f} | "
            f"{100 * r['diff']:+.2f} | [{100 * r['ci_low']:+.2f}, {100 * r['ci_high']:+.2f}] | "
            f"{r['p_value']:.3f} |")
    return "\n".join(lines) + (
        "\n\nScores in percent; CI and p from a paired bootstrap over items (a CI that "
        "excludes 0 is a difference beyond item-sampling noise).\n")


def check_arguments(cfg: Any, suite: SuiteConfig) -> list[BenchmarkRow]:
    """Everything ``main`` can refuse, checked before anything is evaluated or written: the
    numbers, the device, the output folder, the suite and its local data, and every checkpoint
    of both sides (read without its weights, with its tokenizer). Returns the suite's rows."""
    from loki.eval.loading import check_for_eval, resolve_device
    from loki.eval.local_tasks import bind_tasks

    for side in ("a", "b"):
        if not getattr(cfg, side):
            raise LokiError(f"--{side} is empty; give one checkpoint or more: "
                            f"--{side} '[runs/<run>/checkpoints/last.ckpt]'")
    check_bootstrap(cfg.n_boot, cfg.confidence)
    if cfg.batch_size < 1:
        raise LokiError(f"--batch_size must be >= 1, got {cfg.batch_size}")
    resolve_device(cfg.device)
    check_writable(cfg.output_dir, "--output_dir")
    rows = preset_rows(suite.preset, suite.offline, suite.tasks, suite.num_fewshot)
    bind_tasks([r.task for r in rows], suite.data_dir, option="--suite.data_dir")
    for path in dict.fromkeys([*cfg.a, *cfg.b]):
        check_for_eval(path, cfg.tokenizer)
    return rows


def main(argv: list[str] | None = None) -> None:
    from jsonargparse import ActionConfigFile

    from loki.checkpoint_read import resolve_checkpoint
    from loki.tool_parser import tool_parser

    p = tool_parser(prog="loki compare", description=DESCRIPTION)
    p.add_argument("--config", action=ActionConfigFile)
    p.add_argument("--a", type=list[str], required=True,
                   help="checkpoint(s) of side A, a list: '[a.ckpt]' or '[seed1.ckpt,seed2.ckpt]'")
    p.add_argument("--b", type=list[str], required=True, help="checkpoint(s) of side B, a list")
    p.add_argument("--tokenizer", type=str | None, default=None, help="default: from checkpoint")
    p.add_class_arguments(SuiteConfig, "suite")
    p.add_argument("--n_boot", type=int, default=10_000, help="bootstrap resamples (>= 1)")
    p.add_argument("--confidence", type=float, default=0.95,
                   help="CI level, a fraction in (0, 1)")
    p.add_argument("--batch_size", type=int, default=8, help="requests per forward pass")
    p.add_argument("--device", type=str, default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--output_dir", type=str, required=True,
                   help="folder for compare.json, compare.md and tasks/")
    cfg = p.parse_args(argv)
    suite = cfg.suite if isinstance(cfg.suite, SuiteConfig) else SuiteConfig(**vars(cfg.suite))
    # a run folder stands for its last checkpoint: said once, and recorded as taken
    cfg.a, cfg.b = ([str(resolve_checkpoint(c)) for c in side] for side in (cfg.a, cfg.b))
    rows = check_arguments(cfg, suite)
    from loki.eval.adapter import LokiEvalLM
    from loki.eval.local_tasks import task_manager

    out = Path(cfg.output_dir)
    tm = task_manager([r.task for r in rows], suite.data_dir, out / "tasks")
    sides = []
    for paths in (cfg.a, cfg.b):
        side = []
        for path in paths:
            lm = LokiEvalLM(checkpoint=path, tokenizer=cfg.tokenizer, batch_size=cfg.batch_size,
                            device=cfg.device)
            side.append(item_scores(lm, suite, rows, tm))
            del lm
        sides.append(side)
    result = compare_scores(sides[0], sides[1], cfg.n_boot, cfg.confidence, suite.seed)
    md = render_markdown(result, ("A", "B"))
    print(md)  # first: a failed write below loses nothing
    try:  # the pair is replaced together: never a new compare.json beside an old compare.md
        atomic.write_all({
            out / "compare.json": json.dumps(
                {"a": cfg.a, "b": cfg.b, "suite": vars(suite), "tasks": result}, indent=2) + "\n",
            out / "compare.md": f"# A = {', '.join(cfg.a)}\n# B = {', '.join(cfg.b)}\n\n{md}"})
    except OSError as err:  # a full disk: the earlier pair is still there
        raise LokiError(f"cannot write compare.json and compare.md in {out} "
                        f"({err.strerror or err}); the table is printed above") from err
