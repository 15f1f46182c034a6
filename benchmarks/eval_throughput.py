"""Loglikelihood requests/s: the ``loki`` lm-eval adapter vs lm-eval's ``hf`` backend.

Both score the same requests with a model of the same shape (layers, heads, hidden, SwiGLU width,
vocabulary; random weights, no download): a Loki built from a named config, and a
``LlamaForCausalLM`` built from a matching ``LlamaConfig``, saved with ``save_pretrained`` to a
temporary folder that lm-eval's ``hf`` model loads by path together with the same tokenizer
(converted from tiktoken with transformers' own ``TikTokenConverter``). One timed run each (``--repeat`` for
alternating runs, fastest kept), after a short warm-up; prints requests/s and the ratio (target >= 1.0).

    python benchmarks/eval_throughput.py --config small --requests 256 --batch_size 16
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time

import torch


def build_requests(n: int, tokenizer, seed: int = 0) -> list:
    """Multiple-choice-like requests: a 20-120 word context, a 1-6 word continuation."""
    from lm_eval.api.instance import Instance

    words = [tokenizer.decode([i]).strip() for i in range(300, 3000)]
    words = [w for w in words if w.isalpha()]
    rng = random.Random(seed)
    reqs = []
    for i in range(n):
        ctx = " ".join(rng.choices(words, k=rng.randint(20, 120)))
        cont = " " + " ".join(rng.choices(words, k=rng.randint(1, 6)))
        reqs.append(Instance(request_type="loglikelihood", doc={}, arguments=(ctx, cont), idx=i))
    return reqs


def timed(lm, requests) -> tuple[float, list]:
    lm.loglikelihood(requests[:8], disable_tqdm=True)  # warm-up (allocations, kernels)
    start = time.perf_counter()
    out = lm.loglikelihood(requests, disable_tqdm=True)
    return time.perf_counter() - start, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="small", help="LokiConfig name (shape of both models)")
    p.add_argument("--tokenizer", default="cl100k_base", help="LokiTokenizer spec")
    p.add_argument("--requests", type=int, default=256)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--repeat", type=int, default=1,
                   help="timed runs per backend, alternating hf/loki; the fastest is kept "
                        "(>1 on a shared machine whose load changes under the run)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    from loki.console import transformers_without_torchao

    transformers_without_torchao()  # no CUDA-kernel load failures printed on a CPU
    from lm_eval.models.huggingface import HFLM
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    from loki.config import LokiConfig
    from loki.eval.adapter import LokiEvalLM
    from loki.model import Loki
    from loki.tokenizer import LokiTokenizer

    dtype = getattr(torch, args.dtype)
    tok = LokiTokenizer.from_spec(args.tokenizer)
    cfg = LokiConfig.from_name(args.config, vocab_size=tok.vocab_size)
    loki = Loki(cfg).to(args.device, dtype).eval()
    requests = build_requests(args.requests, tok)

    with tempfile.TemporaryDirectory() as tmp:
        llama_cfg = LlamaConfig(
            vocab_size=cfg.vocab_size, hidden_size=cfg.n_embd, intermediate_size=cfg.ffn_hidden,
            num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head,
            num_key_value_heads=cfg.n_head, max_position_embeddings=cfg.block_size,
            rms_norm_eps=cfg.norm_eps, tie_word_embeddings=cfg.tie_embeddings,
            bos_token_id=tok.eot_id, eos_token_id=tok.eot_id, attn_implementation="sdpa")
        LlamaForCausalLM(llama_cfg).save_pretrained(tmp)
        # the same BPE as a transformers fast tokenizer (transformers' own tiktoken converter)
        ranks = tok.save(os.path.join(tmp, "loki_tokenizer")) / "tokenizer.tiktoken"
        fast = TikTokenConverter(vocab_file=str(ranks), pattern=tok.pat_str,
                                 extra_special_tokens=tok.specials).converted()
        hf_tok = PreTrainedTokenizerFast(tokenizer_object=fast, eos_token=tok.decode([tok.eot_id]))
        hf_tok.save_pretrained(tmp)
        # same tokens for the benchmark's texts (the converted regex groups digits differently,
        # so the requests hold words only)
        for r in requests[:32]:
            text = "".join(r.args)
            assert hf_tok(text)["input_ids"] == tok.encode(text), "tokenizers disagree"
        hf = HFLM(pretrained=tmp, tokenizer=tmp, batch_size=args.batch_size, device=args.device,
                  dtype=args.dtype, max_length=cfg.block_size, add_bos_token=False)
        ours = LokiEvalLM.from_model(loki, tok, batch_size=args.batch_size)
        n_params = (sum(p.numel() for p in loki.parameters()),
                    sum(p.numel() for p in hf.model.parameters()))
        hf_s = loki_s = float("inf")
        for _ in range(args.repeat):
            hf_s = min(hf_s, timed(hf, requests)[0])
            loki_s = min(loki_s, timed(ours, requests)[0])
    n = len(requests)
    print(f"device {args.device}, dtype {args.dtype}, config {args.config} "
          f"(params loki {n_params[0]:,} / llama {n_params[1]:,}), tokenizer {tok.name} "
          f"vocab {tok.vocab_size}, {n} requests, batch {args.batch_size}, "
          f"max_length {cfg.block_size}, torch {torch.__version__}, threads "
          f"{torch.get_num_threads()}, best of {args.repeat}")
    print(f"hf   : {n / hf_s:8.2f} requests/s ({hf_s:.2f} s)")
    print(f"loki : {n / loki_s:8.2f} requests/s ({loki_s:.2f} s)")
    print(f"ratio loki / hf = {hf_s / loki_s:.2f}x")


if __name__ == "__main__":
    main()
