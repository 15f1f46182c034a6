"""The demo's real teacher (SmolLM2-135M-Instruct, converted by `loki distill prepare-smollm`).

Skipped when the converted teacher is absent (it needs the package registry once)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loki.distill.smollm import MARKER
from loki.distill.teachers import HFTeacher, Sampling

TEACHER = Path(__file__).resolve().parents[2] / "data" / "teachers" / "smollm2-135m-instruct"


@pytest.mark.slow
@pytest.mark.skipif(not (TEACHER / MARKER).is_file(),
                    reason="run `loki distill prepare-smollm` to convert the demo teacher")
def test_smollm_continues_text_reproducibly(student):
    tok, _ = student
    teacher = HFTeacher(str(TEACHER), dtype="float32", batch_size=2,
                        sampling=Sampling(max_new_tokens=4, temperature=0.8))
    prompts = ["The capital of France is", "def add(a, b):\n    return"]
    a = teacher.generate(prompts, [[], []], seed=1)
    b = teacher.generate(prompts, [[], []], seed=1)
    assert [g.text for g in a] == [g.text for g in b]
    assert all(g.text and g.text.strip() for g in a)
    assert all(tok.encode(g.text) for g in a)  # re-tokenizes into the student's vocabulary
    assert teacher.identity()["backend"] == "transformers"
