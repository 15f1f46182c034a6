"""Teachers: anything that continues a prompt. One protocol, three kinds.

``loki distill build`` asks each configured teacher to continue the sampled training prompts and
writes the continuations, after the benchmark check, to the candidate cache as training targets.

- ``HFTeacher`` (``kind: hf``, ``hf.py``): a transformers causal LM, sampled with vLLM or
  ``generate``.
- ``OpenAITeacher`` (``kind: openai``, ``openai_api.py``): an OpenAI-compatible chat or
  completions endpoint.
- ``LokiTeacher`` (``kind: loki``, ``loki_checkpoint.py``): a Loki checkpoint sharing the
  student's tokenizer.

``make_teacher`` builds one from its config dict.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from loki.distill.teachers.base import Generation, Sampling, Teacher
from loki.distill.teachers.hf import HFTeacher
from loki.distill.teachers.loki_checkpoint import LokiTeacher
from loki.distill.teachers.openai_api import OpenAITeacher
from loki.errors import LokiError

__all__ = ["TEACHER_KINDS", "Generation", "HFTeacher", "LokiTeacher", "OpenAITeacher",
           "Sampling", "Teacher", "make_teacher"]
# the ``kind`` of a teacher in a config -> its class
TEACHER_KINDS = {"hf": HFTeacher, "openai": OpenAITeacher, "loki": LokiTeacher}


def make_teacher(spec: dict[str, Any]) -> Teacher:
    """A teacher from its config dict (``kind`` picks the class)."""
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if kind not in TEACHER_KINDS:
        raise LokiError(f"teacher kind {kind!r} is not one of {', '.join(TEACHER_KINDS)}")
    cls = TEACHER_KINDS[kind]
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise LokiError(f"teacher kind {kind}: unknown keys {unknown}; known: {sorted(known)}")
    if isinstance(spec.get("sampling"), dict):
        spec["sampling"] = Sampling(**spec["sampling"])
    return cls(**spec)

