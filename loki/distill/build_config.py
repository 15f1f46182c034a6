"""``loki distill build``'s configuration: prompts, the benchmark check, teachers, executor.

Every field is documented where it is declared; ``loki distill build --help`` prints them, and
``experiments/distill/*.yaml`` set them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loki.errors import LokiError
from loki.executors import ExecutorConfig


@dataclass
class PromptConfig:
    """Which prompts the teachers continue."""

    shards: list[str] = field(default_factory=list)
    """Token shard folders / manifests / globs written by ``loki tokenize`` (training data)."""
    num_prompts: int = 128
    """Prompts in the cache (fewer if the shards hold fewer windows; counted in the report)."""
    prompt_tokens: int = 64
    """Prompt length Lp in student tokens."""
    max_new_tokens: int = 48
    """Continuation length C kept per candidate, in student tokens."""
    min_ground_truth: int = 8
    """A window needs at least this many document tokens after the prompt."""
    seed: int = 0
    """Seed of the prompt sample."""


@dataclass
class CandidateDecontam:
    """Benchmark-copy check of teacher candidates."""

    index: str | None = None
    """BenchmarkIndex file (``.npz``) from ``loki filter``'s decontamination stage; null: off."""
    max_tries: int = 3
    """Generations per candidate (the first plus regenerations) before it is dropped."""


@dataclass
class BuildConfig:
    """``loki distill build``: teacher candidates for distillation prompts -> a cache folder."""

    output: str = "data/distill/cache"
    """Cache folder (manifest.json, report.json, shards/)."""
    tokenizer: str | None = None
    """Student tokenizer spec; default: the one the shards were made with."""
    prompts: PromptConfig = field(default_factory=PromptConfig)
    """Prompt sampling."""
    teachers: list[dict[str, Any]] = field(default_factory=list)
    """Teachers: dicts with ``kind`` (hf, openai, loki) and that class's fields."""
    decontam: CandidateDecontam = field(default_factory=CandidateDecontam)
    """Benchmark-copy regeneration."""
    soft_top_k: int = 0
    """Keep top-k soft targets for teachers whose tokens map onto the student's (0: none)."""
    seed: int = 0
    """Base sampling seed (each teacher, task and try derives its own, recorded per candidate)."""
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    """datatrove executor (local, slurm, ray) and the number of build tasks."""

    def __post_init__(self) -> None:
        if isinstance(self.prompts, dict):
            self.prompts = PromptConfig(**self.prompts)
        if isinstance(self.decontam, dict):
            self.decontam = CandidateDecontam(**self.decontam)
        if isinstance(self.executor, dict):
            self.executor = ExecutorConfig(**self.executor)
        if not self.teachers:
            raise LokiError("distill build: list at least one teacher under `teachers`")
        p = self.prompts
        if min(p.num_prompts, p.prompt_tokens, p.max_new_tokens, p.min_ground_truth) < 1:
            raise LokiError("prompts.num_prompts, prompt_tokens, max_new_tokens and "
                            "min_ground_truth must be >= 1")
        if self.soft_top_k < 0:
            raise LokiError(f"soft_top_k must be >= 0 (0: no soft targets), got {self.soft_top_k}")
        if self.decontam.max_tries < 1:
            raise LokiError("decontam.max_tries must be >= 1")
