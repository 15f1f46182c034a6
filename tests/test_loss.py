import pytest
import torch
import torch.nn.functional as F

from loki.config import LokiConfig
from loki.loss import linear_cross_entropy
from loki.model import Loki


def _plain(hidden, weight, targets):
    return F.cross_entropy((hidden @ weight.t()).float(), targets, ignore_index=-100)


@pytest.mark.parametrize("chunk_rows", [8, 1000])  # several uneven chunks; one chunk
def test_chunked_loss_equals_cross_entropy_in_value_and_gradients(chunk_rows):
    # fp32: the same sums in another order; tolerance 1e-6 absolute on the loss and 1e-6 on
    # gradients of size ~1e-3.
    N, C, V = 37, 24, 50
    hidden = torch.randn(N, C, requires_grad=True)
    weight = torch.randn(V, C, requires_grad=True)
    targets = torch.randint(0, V, (N,))
    targets[::5] = -100  # ignored rows count neither in the mean nor in the gradients
    ref = _plain(hidden, weight, targets)
    ref_h, ref_w = torch.autograd.grad(3.0 * ref, (hidden, weight))
    loss = linear_cross_entropy(hidden, weight, targets, chunk_rows=chunk_rows)
    got_h, got_w = torch.autograd.grad(3.0 * loss, (hidden, weight))
    torch.testing.assert_close(loss, ref, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got_h, ref_h, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got_w, ref_w, atol=1e-6, rtol=1e-5)


def test_chunked_loss_in_bf16_stays_close_to_fp32():
    # bf16 inputs and weight (FSDP2's param dtype): the logits are rounded to bf16 as a plain
    # bf16 head rounds them, then reduced in fp32. Tolerance: 2e-2 on the loss, gradients to
    # 2e-2 relative of their scale.
    N, C, V = 64, 32, 100
    hidden, weight = torch.randn(N, C), torch.randn(V, C) * 0.2
    targets = torch.randint(0, V, (N,))
    h16 = hidden.bfloat16().requires_grad_()
    w16 = weight.bfloat16().requires_grad_()
    loss = linear_cross_entropy(h16, w16, targets, chunk_rows=16)
    loss.backward()
    h32, w32 = hidden.requires_grad_(), weight.requires_grad_()
    ref = _plain(h32, w32, targets)
    ref.backward()
    assert loss.dtype == torch.float32 and abs(loss.item() - ref.item()) < 2e-2
    assert h16.grad.dtype == torch.bfloat16 and w16.grad.dtype == torch.bfloat16
    for got, want in ((h16.grad, h32.grad), (w16.grad, w32.grad)):
        assert (got.float() - want).abs().max() <= 2e-2 * want.abs().max()


def test_all_rows_ignored_gives_zero_and_no_nan():
    hidden = torch.randn(4, 8, requires_grad=True)
    weight = torch.randn(10, 8, requires_grad=True)
    loss = linear_cross_entropy(hidden, weight, torch.full((4,), -100))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(hidden.grad).all()


def test_model_chunked_path_equals_full_logits_path():
    torch.manual_seed(0)
    model = Loki(LokiConfig.from_name("tiny"))
    idx = torch.randint(0, 512, (2, 16))
    targets = idx.clone()
    targets[:, :3] = -100
    _, full = model(idx, targets)
    full_grads = torch.autograd.grad(full, list(model.parameters()))
    logits, chunked = model(idx, targets, return_logits=False)
    chunked_grads = torch.autograd.grad(chunked, list(model.parameters()))
    assert logits is None
    torch.testing.assert_close(chunked, full, atol=1e-6, rtol=1e-6)
    for a, b in zip(chunked_grads, full_grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_fused_form_equals_the_in_place_form():
    # The chunk step has two spellings: in place for eager torch, and a pointwise form that
    # Inductor fuses (compiled on CUDA). Same values; the fused one traces as one graph.
    import functools

    from loki.loss import chunk_loss_and_grad

    n, V = 9, 40
    logits = torch.randn(n, V)
    targets = torch.randint(0, V, (n,))
    targets[::4] = -100
    n_valid = (targets != -100).sum()
    eager = chunk_loss_and_grad(logits.clone(), targets, n_valid, -100, torch.float32)
    fused = chunk_loss_and_grad(logits.clone(), targets, n_valid, -100, torch.float32, fused=True)
    traced = torch.compile(functools.partial(chunk_loss_and_grad, fused=True), backend="eager",
                           fullgraph=True)(logits.clone(), targets, n_valid, -100, torch.float32)
    ref = torch.func.grad(lambda x: F.cross_entropy(x, targets, ignore_index=-100))(logits)
    for loss, grad in (eager, fused, traced):
        torch.testing.assert_close(loss / n_valid,
                                   F.cross_entropy(logits, targets, ignore_index=-100),
                                   atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(grad, ref, atol=1e-7, rtol=1e-5)
        assert not grad[::4].any()  # ignored rows get no gradient


@pytest.mark.gpu
def test_chunked_loss_on_gpu_at_the_1_4b_head_shape():
    # The compiled, fused chunk step on CUDA: 8 x 2048 positions, d 2048, vocab 32000, bf16,
    # against the plain head's fp32 cross-entropy of the same bf16 logits. Tolerances: 1e-3 on
    # the loss (~10 nats, fp32 sums), bf16 rounding (2^-8 relative) on the gradients.
    N, C, V = 16384, 2048, 32000
    hidden = torch.randn(N, C, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    weight = (torch.randn(V, C, device="cuda") * 0.02).bfloat16().requires_grad_()
    targets = torch.randint(0, V, (N,), device="cuda")
    targets[:100] = -100
    ref = _plain(hidden, weight, targets)
    ref_h, ref_w = torch.autograd.grad(ref, (hidden, weight))
    loss = linear_cross_entropy(hidden, weight, targets)
    got_h, got_w = torch.autograd.grad(loss, (hidden, weight))
    torch.testing.assert_close(loss, ref, atol=1e-3, rtol=1e-4)
    for got, want in ((got_h, ref_h), (got_w, ref_w)):
        assert (got.float() - want.float()).abs().max() <= 1e-2 * want.float().abs().max()
