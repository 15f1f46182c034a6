"""FlexAttention with ALiBi (loki.flex_alibi): the flex and flex-flash backends against eager."""

import pytest
import torch

import loki.flex_alibi as flex_alibi
from loki.attention import causal_attention, resolve_backend, slope_key
from loki.config import LokiConfig
from loki.flex_alibi import flex_alibi_attention
from loki.model import alibi_slopes


def test_flex_score_mod_and_block_mask_match_eager():
    # torch's uncompiled FlexAttention (its reference path, CPU): checks ALiBi as a score_mod
    # and the causal BlockMask at a length that is not a multiple of the 128-token tiles.
    B, H, T, D = 1, 2, 150, 16
    q, k, v = (torch.randn(B, H, T, D) for _ in range(3))
    slopes = alibi_slopes(H)
    ref = causal_attention(q, k, v, slopes, "eager")
    out = flex_alibi_attention(q, k, v, slopes, compiled=False)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_flex_traced_inside_a_compiled_block_builds_its_mask_in_the_graph():
    # Under torch.compile the cached mask would be looked through (Dynamo warns that it ignores
    # lru_cache); the traced path builds it in the graph instead. Dynamo's trace only (eager
    # backend): the same values as the eager reference, one graph, and no cache warning.
    import warnings

    B, H, T, D = 1, 2, 150, 16
    q, k, v = (torch.randn(B, H, T, D) for _ in range(3))
    slopes = alibi_slopes(H)
    torch._dynamo.reset()
    traced = torch.compile(lambda q, k, v: flex_alibi_attention(q, k, v, slopes),
                           backend="eager", fullgraph=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = traced(q, k, v)
    torch.testing.assert_close(out, causal_attention(q, k, v, slopes, "eager"),
                               atol=1e-5, rtol=1e-5)
    assert not [w for w in caught if "lru_cache" in str(w.message)]


def _flex_model(n_layer: int = 2) -> torch.nn.Module:
    from loki.model import Loki

    torch.manual_seed(0)
    return Loki(LokiConfig.from_name("tiny", n_layer=n_layer, block_size=256,
                                     attention_backend="flex")).eval()


def test_the_model_builds_one_block_mask_for_all_layers(monkeypatch):
    # One causal mask per (length, device), shared by every layer: 3 layers and 2 forwards at
    # one length build it once, a second length once more.
    import torch.nn.attention.flex_attention as flex_module

    from loki.attention import clear_caches

    clear_caches()
    built = []
    real = flex_module.create_block_mask

    def counting(*args, **kwargs):
        built.append(args[3:5])
        return real(*args, **kwargs)

    monkeypatch.setattr(flex_module, "create_block_mask", counting)
    model = _flex_model(n_layer=3)
    with torch.no_grad():
        for length in (150, 150, 64):
            model(torch.randint(0, 512, (1, length)))
    assert built == [(150, 150), (64, 64)]


def test_compiled_blocks_take_the_shared_mask_as_an_input():
    # Per-block compilation (the recipe's): without the shared mask each block's graph built its
    # own (arange, vmap'd mask_mod, argsort: ~100 of a block's ~145 nodes, a dozen small kernels
    # per layer per forward). Now the graph holds the block's own work; both blocks and a second
    # forward reuse one graph (no recompilation on the mask), with the eager model's values.
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    model = _flex_model()
    idx = torch.randint(0, 512, (2, 256))
    with torch.no_grad():
        for block in model.blocks:
            block.attn.backend = "eager"
        want = model(idx)[0]
        for block in model.blocks:
            block.attn.backend = "flex"
        torch._dynamo.reset()
        for block in model.blocks:
            block.compile(backend=capture, fullgraph=True)
        model(idx)
        got = model(idx)[0]
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert len(graphs) == 1
    ops = [str(node.target) for node in graphs[0].graph.nodes if node.op == "call_function"]
    assert not [op for op in ops if "arange" in op or "argsort" in op or "vmap" in op], ops
    assert "flex_attention" in ops


def test_the_shared_mask_only_where_flex_runs():
    from loki.attention import shared_block_mask

    x = torch.randn(1, 64, 8)
    assert shared_block_mask("flex", x, 64) is not None
    assert shared_block_mask("sdpa", x, 64) is None
    assert shared_block_mask("auto", x, 64) is None  # the CPU picks sdpa
    assert shared_block_mask("flex", x, 64, dropout_p=0.1) is None  # flex has no dropout
    assert shared_block_mask("flex", x.requires_grad_(), 64) is None  # no CPU flex backward
    q = torch.randn(1, 2, 64, 8)
    mask = shared_block_mask("flex", torch.randn(1, 32, 8), 32)
    with pytest.raises(ValueError, match=r"block_mask covers \(32, 32\) positions"):
        flex_alibi_attention(q, q, q, alibi_slopes(2), compiled=False, block_mask=mask)


def test_a_model_with_a_kv_cache_decodes_past_the_mask():
    # Prefill (Tq == Tk) runs flex with the shared mask; each decoding step runs sdpa. Greedy
    # decoding gives the eager model's tokens.
    model = _flex_model()
    prompt = torch.randint(0, 512, (1, 20))
    out = model.generate(prompt, 5, temperature=0)
    for block in model.blocks:
        block.attn.backend = "eager"
    assert torch.equal(out, model.generate(prompt, 5, temperature=0))


def test_flex_flash_asks_for_the_flash_kernels_and_names_what_it_needs(monkeypatch):
    # flex-flash is flex with kernel_options BACKEND=FLASH; the CPU cannot run it, and the error
    # names both the GPU and the package (decoding still falls back to sdpa, as flex does).
    import torch.nn.attention.flex_attention as flex_module

    q = torch.randn(1, 2, 8, 8)
    with pytest.raises(RuntimeError, match="compute capability >= 9.0.*flash-attn-4"):
        causal_attention(q, q, q, alibi_slopes(2), "flex-flash")
    assert resolve_backend("flex-flash", q, torch.randn(1, 2, 9, 8)) == "sdpa"
    seen = []
    real = flex_module.flex_attention

    def recording(*args, **kwargs):
        seen.append(kwargs.get("kernel_options"))
        return real(*args, **{**kwargs, "kernel_options": None})

    monkeypatch.setattr(flex_module, "flex_attention", recording)
    slopes = alibi_slopes(2)
    out = flex_alibi_attention(q, q, q, slopes, compiled=False, kernel="flash")
    flex_alibi_attention(q, q, q, slopes, compiled=False)
    assert seen == [{"BACKEND": "FLASH"}, None]
    torch.testing.assert_close(out, causal_attention(q, q, q, slopes, "eager"),
                               atol=1e-5, rtol=1e-5)
    assert LokiConfig.from_name("tiny", attention_backend="flex-flash").attention_backend


def test_availability_checks_are_constants_to_the_compiler(monkeypatch):
    # Every layer's call asks which kernels exist, inside the compiled blocks too. Without
    # flash-attn (as on the GPU machine), tracing `import flash_attn` or a find_spec of
    # flash_attn.cute fails ("Import failure") and would split every block's graph at its
    # attention; the checks are called once at trace time instead, with the eager answers.
    import warnings

    from loki.attention import flash_available

    monkeypatch.setattr(flex_alibi, "_AVAILABLE", {}, raising=False)  # nothing answered yet

    def checks(x):
        return x + flash_available() + 2 * flex_alibi.flex_available() \
            + 4 * flex_alibi.flex_flash_available(x.device)

    x = torch.zeros(3)
    torch._dynamo.reset()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        traced = torch.compile(checks, backend="eager", fullgraph=True)(x)
    assert torch.equal(traced, checks(x))
    assert traced[0] == 2 * flex_alibi.flex_available()  # flex: yes; flash: no; flex-flash: no
    assert not [w for w in caught if "lru_cache" in str(w.message)]


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["flex", "flex-flash"])
def test_flex_matches_eager_on_gpu_at_training_shape(backend):
    # T 2048, 32 heads, bf16, forward and backward, on Inductor's Triton template (flex) and on
    # FlashAttention-4's CuTe kernels (flex-flash; skipped where they cannot run). Both apply
    # ALiBi in fp32 inside the kernel; the reference runs fp32 eager attention on the same bf16
    # inputs. Tolerance: bf16 output rounding (2^-8 relative) over sums of 2048 terms: 2e-2
    # absolute on outputs, 5e-2 on grads.
    if backend == "flex-flash" and not flex_alibi.flex_flash_available():
        pytest.skip(f"flex-flash needs {flex_alibi.FLEX_FLASH_NEEDS}")
    B, H, T, D = 1, 32, 2048, 64
    q, k, v = (torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
               for _ in range(3))
    slopes = alibi_slopes(H).cuda()
    out = causal_attention(q, k, v, slopes, backend)
    grad = torch.randn_like(out)
    gq, gk, gv = torch.autograd.grad(out, (q, k, v), grad)
    qf, kf, vf = (t.detach().float().requires_grad_() for t in (q, k, v))
    ref = causal_attention(qf, kf, vf, slopes, "eager", key=slope_key(alibi_slopes(H)))
    rq, rk, rv = torch.autograd.grad(ref, (qf, kf, vf), grad.float())
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2e-2)
    for got, want in ((gq, rq), (gk, rk), (gv, rv)):
        torch.testing.assert_close(got.float(), want, atol=5e-2, rtol=5e-2)
    assert resolve_backend("auto", q, k) in ("flash", "flex")


@pytest.mark.gpu
def test_a_block_on_auto_traces_as_one_graph_on_gpu():
    # The recipe's path: attention_backend auto on CUDA in bf16, inside a compiled block. One
    # graph, forward and backward (Dynamo's trace only: the eager backend compiles nothing).
    from loki.model import Loki

    torch._dynamo.reset()
    block = Loki(LokiConfig.from_name("tiny")).blocks[0].cuda().to(torch.bfloat16)
    x = torch.randn(2, 256, block.attn.qkv.in_features, device="cuda", dtype=torch.bfloat16,
                    requires_grad=True)
    torch.compile(block, backend="eager", fullgraph=True)(x).float().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.gpu
def test_compiled_blocks_on_auto_train_with_the_shared_mask_on_gpu():
    # The fit path: auto on CUDA in bf16, per-block compiled, forward and backward. The blocks
    # take the model's one mask as an input (their graph builds none) and share one graph.
    from loki.model import Loki

    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    model = Loki(LokiConfig.from_name("tiny", block_size=256)).cuda().to(torch.bfloat16)
    for block in model.blocks:
        block.compile(backend=capture, fullgraph=True)
    idx = torch.randint(0, 512, (2, 256), device="cuda")
    model(idx, targets=idx, return_logits=False)[1].backward()
    assert len(graphs) == 1
    ops = [str(node.target) for node in graphs[0].graph.nodes if node.op == "call_function"]
    assert "flex_attention" in ops and not [op for op in ops if "argsort" in op]
