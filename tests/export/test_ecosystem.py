"""The export in other tools: lm-eval's ``hf`` backend scores it as ``--model loki`` scores the
checkpoint, and a PEFT LoRA adapter trains on it."""

from __future__ import annotations

import json

import pytest
import torch

CLOZE = [{"id": f"c{i}", "query": f"The parser reads argument number {i}.",
          "choices": [" It stores the value.", " The help text is wrapped.", " Bread is baked."],
          "gold": i % 3} for i in range(4)]
LASTWORD = [{"id": f"w{i}", "query": f"def parse_args(self, args=None, namespace={i}",
             "answer": "None"} for i in range(3)]


def _write_tasks(root):
    for name, rows in (("loki_demo_cloze", CLOZE), ("loki_demo_lastword", LASTWORD)):
        (root / name).mkdir(parents=True)
        for split in ("train", "test"):
            (root / name / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _samples(out, task):
    return sorted(out["samples"][task], key=lambda s: s["doc_id"])


def test_lm_eval_hf_on_the_export_matches_loki_on_the_checkpoint(exported, trained_ckpt,
                                                                  tmp_path):
    pytest.importorskip("lm_eval")
    from lm_eval import simple_evaluate

    import loki.eval.adapter  # noqa: F401  (registers "loki")
    from loki.eval.local_tasks import task_manager

    tasks = ["loki_demo_cloze", "loki_demo_lastword"]
    tm = task_manager(tasks, _write_tasks(tmp_path / "data"), tmp_path / "tasks")
    runs = {
        "hf": dict(pretrained=str(exported), trust_remote_code=True, dtype="float32",
                   device="cpu", batch_size=2),
        "loki": dict(checkpoint=str(trained_ckpt), device="cpu", batch_size=2),
    }
    out = {name: simple_evaluate(model=name, model_args=args, tasks=tasks, task_manager=tm,
                                 log_samples=True, bootstrap_iters=0)
           for name, args in runs.items()}
    hf, loki = (_samples(out[n], "loki_demo_cloze") for n in ("hf", "loki"))
    assert len(hf) == len(loki) == len(CLOZE)
    for a, b in zip(hf, loki):
        got = [float(r[0][0]) for r in a["resps"]]
        want = [float(r[0][0]) for r in b["resps"]]
        assert got == pytest.approx(want, abs=1e-4)
    # greedy generation through HF generate() (left-padded batch, KV cache) and Loki's decoder
    hf, loki = (_samples(out[n], "loki_demo_lastword") for n in ("hf", "loki"))
    assert [s["resps"] for s in hf] == [s["resps"] for s in loki]
    assert out["hf"]["results"]["loki_demo_cloze"]["acc,none"] == (
        out["loki"]["results"]["loki_demo_cloze"]["acc,none"])


def test_peft_lora_attaches_and_trains_one_step(exported, pruned):
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(exported, trust_remote_code=True)
    lora = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                            target_modules=["q_proj", "v_proj"],
                                            task_type="CAUSAL_LM"))
    trainable = {n: p for n, p in lora.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert len(trainable) == 2 * 2 * model.config.num_hidden_layers  # A and B, q and v
    frozen = {n: p.detach().clone() for n, p in lora.named_parameters() if not p.requires_grad}
    ids = torch.tensor([pruned.encode("def parse_known_args(self, args=None, namespace=None):")])
    opt = torch.optim.AdamW(trainable.values(), lr=1e-2)
    lora.train()
    loss = lora(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in trainable.values())
    assert any(float(p.detach().abs().sum()) > 0 for n, p in trainable.items() if "lora_B" in n)
    assert all(torch.equal(p, frozen[n]) for n, p in lora.named_parameters() if n in frozen)
    with torch.no_grad():
        assert float(lora(input_ids=ids, labels=ids).loss) < float(loss)
