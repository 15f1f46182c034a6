"""Benchmark presets: which lm-eval task, how many shots and which metric fills each Table-1 row.

- ``leaderboard``: the Open LLM Leaderboard (v1) settings the paper's peer numbers come from.
- ``paper``: the shot counts printed in the paper's Table 1 (10/5/5/5/8/10).
- ``demo``: the small local tasks built from held-out demo text (``loki.eval.demo_tasks``).

With ``offline=True`` the benchmark rows use the packaged ``*_local`` tasks (lm-eval's own task
definitions reading local JSON lines), so nothing is fetched from the hub.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from loki.errors import LokiError


@dataclass(frozen=True)
class BenchmarkRow:
    """One row of the results table."""

    label: str
    """Row name in Table 1 (also the key of the peer numbers)."""
    task: str
    """lm-eval task (or group) name."""
    num_fewshot: int
    """In-context examples."""
    metric: str
    """lm-eval result key, ``<metric>,<filter>``."""
    local_task: str | None = None
    """The packaged offline variant of ``task``."""


_ARC = BenchmarkRow("ARC-Challenge", "arc_challenge", 25, "acc_norm,none", "arc_challenge_local")
_HELLA = BenchmarkRow("HellaSwag", "hellaswag", 10, "acc_norm,none", "hellaswag_local")
_MMLU = BenchmarkRow("MMLU", "mmlu", 5, "acc,none", "mmlu_local")
_WINO = BenchmarkRow("Winogrande", "winogrande", 5, "acc,none", "winogrande_local")
_GSM = BenchmarkRow("GSM8K", "gsm8k", 5, "exact_match,strict-match", "gsm8k_local")
_TQA = BenchmarkRow("TruthfulQA", "truthfulqa_mc2", 0, "acc,none", "truthfulqa_mc2_local")

# Row order follows the paper's Table 1.
PRESETS: dict[str, list[BenchmarkRow]] = {
    "leaderboard": [_ARC, _HELLA, _MMLU, _WINO, _GSM, _TQA],
    "paper": [replace(_ARC, num_fewshot=10), replace(_HELLA, num_fewshot=5), _MMLU, _WINO,
              replace(_GSM, num_fewshot=8), replace(_TQA, num_fewshot=10)],
    "demo": [
        BenchmarkRow("Demo cloze", "loki_demo_cloze", 0, "acc_norm,none", "loki_demo_cloze"),
        BenchmarkRow("Demo last word", "loki_demo_lastword", 0, "exact_match,first-word",
                     "loki_demo_lastword"),
        # BLiMP-style minimal pairs: the one task that shows learning at demo scale (chance 50%)
        BenchmarkRow("Demo minimal pairs", "loki_demo_pairs", 0, "acc,none", "loki_demo_pairs"),
    ],
}
# Chance accuracy of a task (random choice among its options), printed beside its score; tasks
# whose items have varying numbers of options (MMLU: 4, HellaSwag: 4, TruthfulQA MC2) use the
# common case, generation tasks have none (0).
CHANCE: dict[str, float] = {
    "arc_challenge": 0.25, "hellaswag": 0.25, "mmlu": 0.25, "winogrande": 0.5, "gsm8k": 0.0,
    "loki_demo_cloze": 0.25, "loki_demo_lastword": 0.0, "loki_demo_pairs": 0.5,
}


def chance(task: str) -> float | None:
    """Chance accuracy of a task (or its ``*_local`` variant); None when not known."""
    return CHANCE.get(task.removesuffix("_local"))


# The row left out of the second average, as in the paper.
TRUTHFULQA = "TruthfulQA"


def preset_rows(name: str, offline: bool = False, tasks: list[str] | None = None,
                num_fewshot: int | None = None) -> list[BenchmarkRow]:
    """The rows of a preset, optionally only some tasks, offline variants, shots overridden."""
    if name not in PRESETS:
        raise LokiError(f"unknown eval preset {name!r}; choose one of: {', '.join(PRESETS)}")
    rows = PRESETS[name]
    if tasks:
        known = {r.task for r in rows} | {r.local_task for r in rows} | {r.label for r in rows}
        unknown = [t for t in tasks if t not in known]
        if unknown:
            raise LokiError(f"task(s) {', '.join(unknown)} are not in preset {name!r}; its tasks: "
                            + ", ".join(r.task for r in rows))
        rows = [r for r in rows if {r.task, r.local_task, r.label} & set(tasks)]
    if offline:
        rows = [replace(r, task=r.local_task or r.task) for r in rows]
    if num_fewshot is not None:
        rows = [replace(r, num_fewshot=num_fewshot) for r in rows]
    return rows
