"""What every teacher shares: sampling parameters, one continuation, and the protocol.

``generate(prompts, prompt_ids, seed)`` returns one ``Generation`` per prompt. The same call with
the same seed gives the same text (API teachers: as far as the endpoint honours ``seed``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass
class Sampling:
    """How a teacher samples its continuation (recorded in the cache manifest)."""

    max_new_tokens: int = 48
    """Continuation length in the teacher's tokens (the cache truncates to the student's C)."""
    temperature: float = 0.8
    """Sampling temperature (0: greedy)."""
    top_p: float = 0.95
    """Nucleus sampling mass."""
    top_k: int | None = None
    """Keep only the k most likely tokens (None: no limit)."""


@dataclass
class Generation:
    """One continuation. Soft targets come either as student ids (shared vocabulary) or as token
    strings (API and foreign vocabularies; the builder maps them when they map one-to-one)."""

    text: str | None = None
    token_ids: list[int] | None = None
    top_ids: list[list[int]] | None = None
    tokens: list[str] | None = None
    top_tokens: list[list[str]] | None = None
    top_logprobs: list[list[float]] | None = None


@runtime_checkable
class Teacher(Protocol):
    name: str
    shares_student_vocab: bool

    def identity(self) -> dict[str, Any]:
        """What produced the candidates (model, revision, sampling) for the manifest."""
        ...

    def generate(self, prompts: list[str], prompt_ids: list[list[int]],
                 seed: int) -> list[Generation]:
        ...
