"""Teachers: anything that continues a prompt. One protocol, three kinds.

``loki distill build`` asks each configured teacher to continue the sampled training prompts and
writes the continuations, after the benchmark check, to the candidate cache as training targets.

- ``HFTeacher`` (``hf``): a transformers causal LM, sampled with vLLM or ``generate``.
- ``OpenAITeacher`` (``openai_api``): an OpenAI-compatible chat or completions endpoint.
- ``LokiTeacher`` (``loki_checkpoint``): a Loki checkpoint sharing the student's tokenizer.
"""

from __future__ import annotations

from loki.distill.teachers.base import Generation, Sampling, Teacher
from loki.distill.teachers.hf import HFTeacher
from loki.distill.teachers.loki_checkpoint import LokiTeacher
from loki.distill.teachers.openai_api import OpenAITeacher

__all__ = ["Generation", "HFTeacher", "LokiTeacher", "OpenAITeacher", "Sampling", "Teacher"]
