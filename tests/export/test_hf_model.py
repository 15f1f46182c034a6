"""The exported transformers model against Loki's own forward pass and ``loki generate``."""

from __future__ import annotations

import pytest
import torch

from loki.eval.generate import SamplingConfig, sample

TOL = 1e-5  # fp32; the split q/k/v and gate/up matmuls only change summation order


def _loki_logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids)[0]


def _hf_logits(model, ids: torch.Tensor, **kw) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, **kw).logits


def test_remote_code_alibi_slopes_are_lokis():
    """The remote file keeps its own copy (it must run without the loki package)."""
    from loki.attention import alibi_slopes
    from loki.export.remote import modeling_loki

    for n in range(1, 41):
        assert torch.equal(torch.tensor(modeling_loki.alibi_slopes(n)), alibi_slopes(n))


@pytest.mark.parametrize("overrides", [{}, {"tie_embeddings": True, "n_head": 3, "n_embd": 48}],
                         ids=["tiny", "tied-3-heads"])
def test_random_tiny_logits_equal_in_fp32(tmp_path, overrides):
    """An untrained ``tiny`` (as initialized) and a tied-embedding variant whose head count is not
    a power of two (the other ALiBi slope rule), inside and past the training length."""
    from transformers import AutoModelForCausalLM

    from loki.export.hf import export_hf
    from loki.module import load_model
    from tests.eval.checkpoints import save_small_tokenizer, save_tiny_checkpoint

    tok = save_small_tokenizer(tmp_path / "tok")
    ckpt = save_tiny_checkpoint(tmp_path / "t.ckpt", tokenizer=str(tok.path),
                                vocab_size=tok.vocab_size, **overrides)
    export_hf(ckpt, tmp_path / "hf")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", trust_remote_code=True)
    model, config, _ = load_model(ckpt)
    ids = torch.randint(0, config.vocab_size, (3, 2 * config.block_size))
    torch.testing.assert_close(_hf_logits(hf, ids), _loki_logits(model, ids), atol=TOL, rtol=0)
    if config.tie_embeddings:
        assert hf.lm_head.weight.data_ptr() == hf.model.embed_tokens.weight.data_ptr()


def test_trained_logits_equal_in_fp32(hf_model, loki_model):
    ids = torch.randint(0, loki_model.config.vocab_size, (4, loki_model.config.block_size))
    torch.testing.assert_close(_hf_logits(hf_model, ids), _loki_logits(loki_model.model, ids),
                               atol=TOL, rtol=0)


def test_left_padding_with_a_mask_leaves_the_real_tokens_unchanged(hf_model, loki_model):
    """ALiBi depends on distances only: a left-padded row gives the unpadded row's logits."""
    ids = torch.randint(0, loki_model.config.vocab_size, (1, 20))
    padded = torch.cat([torch.full((1, 7), hf_model.config.pad_token_id), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 7, dtype=torch.long), torch.ones(1, 20, dtype=torch.long)], 1)
    got = _hf_logits(hf_model, padded, attention_mask=mask)[:, 7:]
    assert torch.isfinite(_hf_logits(hf_model, padded, attention_mask=mask)).all()
    torch.testing.assert_close(got, _loki_logits(loki_model.model, ids), atol=TOL, rtol=0)


PROMPTS = ["def parse_args(self, args=None", "The text is wrapped so that", "\n\n"]


def test_greedy_generate_with_kv_cache_equals_loki_generate(hf_model, loki_model):
    tok = loki_model.tokenizer
    lengths = []
    hook = hf_model.model.register_forward_pre_hook(
        lambda _, args, kwargs: lengths.append(kwargs["input_ids"].shape[1]), with_kwargs=True)
    try:
        for prompt in PROMPTS:
            ids = torch.tensor([tok.encode(prompt)])
            lengths.clear()
            out = hf_model.generate(ids, max_new_tokens=24, do_sample=False, use_cache=True)
            new = out[0, ids.shape[1]:].tolist()
            assert lengths[0] == ids.shape[1] and set(lengths[1:]) == {1}  # cached decoding
            # `loki generate` (temperature 0): its text, and its model's token ids
            cfg = SamplingConfig(max_new_tokens=24, temperature=0.0, top_p=None)
            text = sample(loki_model, [prompt], cfg)[0]["samples"][0]
            assert tok.decode([t for t in new if t != tok.eot_id]) == text
            ref = loki_model.model.generate(ids, 24, temperature=0.0, stop=[[tok.eot_id]])
            ref = ref[0, ids.shape[1]:].tolist()
            assert new == ref[: len(new)] and (len(new) == 24 or new[-1] == tok.eot_id)
    finally:
        hook.remove()
    assert len({tuple(tok.encode(p)) for p in PROMPTS}) == len(PROMPTS)


def test_batched_left_padded_generate_equals_one_by_one(hf_model, loki_model):
    from transformers import AutoTokenizer

    hf_tok = AutoTokenizer.from_pretrained(hf_model.name_or_path, trust_remote_code=True)
    hf_tok.padding_side = "left"
    batch = hf_tok(PROMPTS[:2], return_tensors="pt", padding=True)
    out = hf_model.generate(**batch, max_new_tokens=12, do_sample=False)
    for row, prompt in enumerate(PROMPTS[:2]):
        ids = torch.tensor([loki_model.tokenizer.encode(prompt)])
        ref = loki_model.model.generate(ids, 12, temperature=0.0)[0, ids.shape[1]:]
        got = out[row, batch["input_ids"].shape[1]:]
        n = int((got != hf_tok.pad_token_id).cumprod(0).sum())  # up to the first pad/eos
        assert n > 0 and got[:n].tolist() == ref[:n].tolist()


def test_labels_give_lokis_shifted_loss(hf_model, loki_model):
    ids = torch.randint(0, loki_model.config.vocab_size, (2, 16))
    with torch.no_grad():
        loss = hf_model(input_ids=ids, labels=ids).loss
        _, ref = loki_model.model(ids[:, :-1], ids[:, 1:])
    assert float(loss) == pytest.approx(float(ref), abs=1e-5)


def test_gradient_checkpointing_recomputes_and_gives_the_same_gradients(exported):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(exported, trust_remote_code=True).train()
    ids = torch.randint(0, model.config.vocab_size, (2, 24))
    calls = []
    # a pre-hook: the recompute stops early, once the tensors backward needs exist again
    model.model.layers[0].register_forward_pre_hook(lambda *_: calls.append(1))

    def grads() -> dict[str, torch.Tensor]:
        model.zero_grad()
        calls.clear()
        model(input_ids=ids, labels=ids).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain, plain_calls = grads(), len(calls)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    checkpointed = grads()
    assert (plain_calls, len(calls)) == (1, 2)  # the layer ran again in backward
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, atol=1e-6, rtol=1e-5, msg=name)
