"""The lm-eval adapter against direct computations with the model, and inside simple_evaluate."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from loki.errors import LokiError

pytest.importorskip("lm_eval")

# float32 on the CPU; batching pads to the right, which changes reduction order only
TOL = 1e-4


def _instance(kind, args, idx=0):
    from lm_eval.api.instance import Instance

    return Instance(request_type=kind, doc={}, arguments=args, idx=idx)


def _direct(model, ctx: list[int], cont: list[int]) -> float:
    tokens = torch.tensor([ctx + cont])
    with torch.no_grad():
        logits, _ = model(tokens[:, :-1])
    lp = F.log_softmax(logits.float(), dim=-1)[0, -len(cont):]
    return float(lp.gather(-1, torch.tensor(cont)[:, None]).sum())


def test_loglikelihood_matches_direct_computation(lm, tokenizer):
    pairs = [("The capital of France is", " Paris"), ("One two three", " four five"),
             ("A", " much longer continuation of several tokens here"), ("Hi", "!")]
    got = lm.loglikelihood([_instance("loglikelihood", p, i) for i, p in enumerate(pairs)])
    for (ctx, cont), (score, greedy) in zip(pairs, got):
        whole, c = tokenizer.encode(ctx + cont), tokenizer.encode(ctx)
        assert score == pytest.approx(_direct(lm.model, c, whole[len(c):]), abs=TOL)
        assert isinstance(greedy, bool)


def test_context_longer_than_block_size(tiny_ckpt, lm, tokenizer):
    from loki.eval.adapter import LokiEvalLM

    block = lm.eval_model.config.block_size
    ctx = " ".join(f"word{i}" for i in range(200))  # several block sizes of tokens
    cont = " the end"
    c = tokenizer.encode(ctx)
    w = tokenizer.encode(ctx + cont)[len(c):]
    assert len(c) > 2 * block
    # default: the context is cut from the left to block_size inputs
    (score, _), = lm.loglikelihood([_instance("loglikelihood", (ctx, cont))])
    kept = (c + w)[-(block + 1):]
    assert score == pytest.approx(_direct(lm.model, kept[: -len(w)], w), abs=TOL)
    # ALiBi: a larger max_length scores the whole context, past the training length
    long_lm = LokiEvalLM.from_model(lm.model, tokenizer, batch_size=2, max_length=len(c) + len(w))
    (long_score, _), = long_lm.loglikelihood([_instance("loglikelihood", (ctx, cont))])
    assert long_score == pytest.approx(_direct(lm.model, c, w), abs=TOL)
    assert long_score != pytest.approx(score, abs=1e-3)


def test_loglikelihood_rolling_covers_every_token_once(lm, tokenizer):
    from loki.eval.adapter import LokiEvalLM

    text = " ".join(f"token{i}" for i in range(60))
    ids = tokenizer.encode(text)
    direct = _direct(lm.model, [tokenizer.eot_id], ids)  # one window, no truncation
    wide = LokiEvalLM.from_model(lm.model, tokenizer, max_length=len(ids) + 8)
    assert wide.loglikelihood_rolling([_instance("loglikelihood_rolling", (text,))])[0] == (
        pytest.approx(direct, abs=TOL))
    # short windows: every token still scored exactly once, each with less context
    narrow = LokiEvalLM.from_model(lm.model, tokenizer, max_length=16)
    score = narrow.loglikelihood_rolling([_instance("loglikelihood_rolling", (text,))])[0]
    assert math.isfinite(score) and score < 0
    assert score != pytest.approx(direct, abs=1e-3)


def test_generate_until_stops_at_stop_strings(lm, tokenizer):
    prompt = "Once upon a time"
    ctx = torch.tensor([tokenizer.encode(prompt)])
    new_ids = lm.model.generate(ctx, 12, temperature=0.0)[0, ctx.size(1):].tolist()
    free = lm.generate_until(
        [_instance("generate_until", (prompt, {"until": [], "max_gen_toks": 12}))])[0]
    assert free == tokenizer.decode(new_ids)  # same greedy path as the model's own generate
    # a stop string that straddles a token boundary, taken from the free-running output
    first = tokenizer.decode(new_ids[:3])
    stop = free[len(first) - 1 : len(first) + 2]
    assert len(stop) == 3
    stopped = lm.generate_until(
        [_instance("generate_until", (prompt, {"until": [stop], "max_gen_toks": 12}))])[0]
    assert stopped == free[: free.find(stop)]
    assert len(stopped) < len(free)
    # max tokens
    short = lm.generate_until(
        [_instance("generate_until", (prompt, {"until": [], "max_gen_toks": 2}))])[0]
    assert short == tokenizer.decode(new_ids[:2])


def test_batched_generation_equals_single(lm):
    reqs = [_instance("generate_until", (p, {"until": ["\n"], "max_gen_toks": 6}), i)
            for i, p in enumerate(["Hello there", "Hello world", "A longer prompt here"])]
    batched = lm.generate_until(reqs)
    single = [lm.generate_until([r])[0] for r in reqs]
    assert batched == single


def test_simple_evaluate_on_local_tasks(lm, demo_data, tmp_path):
    from lm_eval import simple_evaluate

    from loki.eval.local_tasks import task_manager

    tasks = ["loki_demo_cloze", "loki_demo_lastword"]
    tm = task_manager(tasks, demo_data, tmp_path / "tasks")
    out = simple_evaluate(model=lm, tasks=tasks, task_manager=tm, num_fewshot=1,
                          bootstrap_iters=10)
    cloze, last = out["results"]["loki_demo_cloze"], out["results"]["loki_demo_lastword"]
    assert 0.0 <= cloze["acc,none"] <= 1.0 and "acc_stderr,none" in cloze
    assert 0.0 <= last["exact_match,first-word"] <= 1.0
    assert out["n-samples"]["loki_demo_cloze"]["effective"] == 6


def test_simple_evaluate_by_name_with_model_args(tiny_ckpt, demo_data, tmp_path):
    from lm_eval import simple_evaluate

    import loki.eval.adapter  # noqa: F401  (registers "loki")
    from loki.eval.local_tasks import task_manager

    tm = task_manager(["loki_demo_cloze"], demo_data, tmp_path / "tasks")
    out = simple_evaluate(model="loki", model_args=f"checkpoint={tiny_ckpt},batch_size=2",
                          tasks=["loki_demo_cloze"], task_manager=tm, limit=2)
    assert "acc,none" in out["results"]["loki_demo_cloze"]


def test_tokenizer_mismatch_is_refused(tiny_ckpt, tmp_path, tokenizer):
    from loki.eval.adapter import LokiEvalLM
    from loki.tokenizer import EOT, LokiTokenizer
    from tests.eval.checkpoints import save_tiny_checkpoint

    ranks = {t: r for t, r in tokenizer.ranks.items() if r < 300}
    other = LokiTokenizer(name="small", pat_str=tokenizer.pat_str, ranks=ranks,
                          specials={EOT: 300}, base="cl100k_base")
    other_dir = other.save(tmp_path / "small_tok")
    with pytest.raises(LokiError, match="tokenizer mismatch.*vocab_hash"):
        LokiEvalLM(checkpoint=str(tiny_ckpt), tokenizer=str(other_dir))
    small_ckpt = save_tiny_checkpoint(tmp_path / "s.ckpt", tokenizer=str(other_dir),
                                      vocab_size=301)
    with pytest.raises(LokiError, match="tokenizer mismatch"):
        LokiEvalLM(checkpoint=str(small_ckpt), tokenizer="cl100k_base")
    assert LokiEvalLM(checkpoint=str(small_ckpt)).eot_token_id == 300


def test_bad_task_inputs(demo_data, tmp_path):
    from loki.eval.local_tasks import prepare_tasks, task_manager
    from loki.eval.presets import preset_rows

    with pytest.raises(LokiError, match="missing.*gsm8k"):
        prepare_tasks(["gsm8k_local"], tmp_path / "nowhere", tmp_path / "t")
    with pytest.raises(LokiError, match="unknown task.*no_such_task_xyz"):
        task_manager(["loki_demo_cloze", "no_such_task_xyz"], demo_data, tmp_path / "t",
                     builtin=False)
    with pytest.raises(LokiError, match="not in preset"):
        preset_rows("leaderboard", tasks=["no_such_task_xyz"])
    with pytest.raises(LokiError, match="unknown eval preset"):
        preset_rows("nope")


def test_missing_checkpoint():
    from loki.eval.adapter import LokiEvalLM

    with pytest.raises(LokiError, match="checkpoint"):
        LokiEvalLM(checkpoint="/nonexistent.ckpt")
