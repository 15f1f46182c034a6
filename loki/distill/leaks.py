"""The one benchmark-text check on every path from a teacher to the loss.

The cache build (``loki distill build``), online teachers during training
(``callbacks/distillation.py``) and machine-generated text (``loki distill synthetic``) all call
``generate_checked``: generate, check prompt + continuation with ``check_text``, regenerate with
a new seed what copies benchmark text, up to ``max_tries`` generations, then drop it. The check
covers prompt + continuation because an n-gram can straddle the boundary: a prompt ending in the
first words of a benchmark question and a continuation that completes it are each clean alone.

``check_text`` is the single place that decides; the shared benchmark normaliser plugs in here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from loki.errors import LokiError


class ContaminationIndex(Protocol):
    """What the check needs from ``loki.filtering.decontam.BenchmarkIndex``."""

    def contaminated(self, text: str) -> bool: ...


def check_text(index: ContaminationIndex | None, prompt: str, continuation: str) -> bool:
    """True when ``prompt + continuation`` holds benchmark text (no index: never)."""
    if index is None:
        return False
    return bool(index.contaminated(prompt + continuation))


def load_index(path: str | None) -> ContaminationIndex | None:
    """A saved ``BenchmarkIndex`` (``.npz`` from ``loki filter``'s decontamination stage)."""
    if not path:
        return None
    from loki._optional import require

    return require("loki.filtering.decontam", "data").BenchmarkIndex.load(path)


@dataclass
class Checked:
    """What ``generate_checked`` kept: per prompt (generation, student ids, text, seed) or None
    (dropped: every try copied benchmark text), the tries per prompt, regenerations made."""

    kept: list[tuple[Any, list[int], str, int] | None]
    attempts: list[int]
    regenerations: int = 0
    dropped: list[int] = field(default_factory=list)


def generate_checked(
    generate: Callable[[list[int], int], list[Any]],
    prompts: list[str],
    decode: Callable[[Any], tuple[list[int], str]],
    seed_of_try: Callable[[int], int],
    index: ContaminationIndex | None,
    max_tries: int,
    name: str = "teacher",
) -> Checked:
    """Generate for every prompt, regenerating benchmark copies with a new seed per try.

    ``generate(rows, seed)`` continues prompts ``rows`` (indices into ``prompts``) and returns one
    generation each; ``decode(gen)`` gives (student ids, continuation text)."""
    n = len(prompts)
    out = Checked([None] * n, [0] * n)
    pending = list(range(n))
    for attempt in range(max_tries):
        if not pending:
            break
        seed = seed_of_try(attempt)
        gens = generate(pending, seed)
        if len(gens) != len(pending):
            raise LokiError(f"teacher {name} returned {len(gens)} continuations for "
                            f"{len(pending)} prompts")
        retry = []
        for r, gen in zip(pending, gens):
            out.attempts[r] = attempt + 1
            ids, text = decode(gen)
            if check_text(index, prompts[r], text):
                retry.append(r)
                continue
            out.kept[r] = (gen, ids, text, seed)
        out.regenerations += len(retry) if attempt + 1 < max_tries else 0
        pending = retry
    out.dropped = pending
    return out
