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
