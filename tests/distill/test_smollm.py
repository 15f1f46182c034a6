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


def test_the_saved_teacher_is_readable_by_others_as_a_plain_write_leaves_it(tmp_path):
    transformers = pytest.importorskip("transformers")
    from loki.distill.smollm import save_teacher

    config = transformers.LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=16,
                                      num_hidden_layers=1, num_attention_heads=2)
    model = transformers.LlamaForCausalLM(config)

    class Tokenizer:  # what save_teacher asks of the GGUF's tokenizer
        def save_pretrained(self, folder):
            (Path(folder) / "tokenizer.json").write_text("{}")

    out = tmp_path / "teacher"
    save_teacher(model, Tokenizer(), out)
    (tmp_path / "plain").write_text("x")
    plain = oct((tmp_path / "plain").stat().st_mode & 0o777)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in out.iterdir()}
    assert "model.safetensors" in modes and modes == dict.fromkeys(modes, plain)
