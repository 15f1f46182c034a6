import math

import pytest
import torch

from loki.attention import alibi_bias, causal_attention
from loki.model import alibi_slopes


def test_alibi_slopes_power_of_two():
    # ALiBi paper: for 8 heads the slopes are 1/2, 1/4, ..., 1/256.
    assert torch.allclose(alibi_slopes(8), torch.tensor([2.0 ** -(i + 1) for i in range(8)]))
    s32 = alibi_slopes(32)
    assert s32.shape == (32,)
    assert math.isclose(s32[0].item(), 2**-0.25, rel_tol=1e-6)
    assert math.isclose(s32[-1].item(), 2**-8, rel_tol=1e-6)


def test_alibi_slopes_not_a_power_of_two():
    # 12 heads: the 8-head sequence, then every other slope of the 16-head sequence.
    s16 = [2.0 ** (-0.5 * (i + 1)) for i in range(16)]
    expected = [2.0 ** -(i + 1) for i in range(8)] + s16[0::2][:4]
    assert torch.allclose(alibi_slopes(12), torch.tensor(expected))
    assert len(set(alibi_slopes(12).tolist())) == 12


def test_bias_is_causal_and_linear_in_distance():
    slopes = alibi_slopes(4)
    bias = alibi_bias(slopes, 5, 5, torch.float32, torch.device("cpu"))
    assert bias.shape == (4, 5, 5)
    assert torch.isinf(bias[:, 0, 1:]).all()
    assert torch.allclose(bias[1, 4, :], -slopes[1] * torch.tensor([4.0, 3, 2, 1, 0]))
    # queries at the end of a longer key range (KV cache) see the same row
    tail = alibi_bias(slopes, 1, 5, torch.float32, torch.device("cpu"))
    assert torch.equal(tail[:, 0], bias[:, 4])


@pytest.mark.parametrize("q_len", [7, 1])
def test_sdpa_matches_eager(q_len):
    # Tolerance: both run in float32 on the CPU; differences are summation order only.
    B, H, T, D = 2, 4, 7, 16
    q = torch.randn(B, H, q_len, D)
    k, v = torch.randn(B, H, T, D), torch.randn(B, H, T, D)
    slopes = alibi_slopes(H)
    ref = causal_attention(q, k, v, slopes, "eager")
    out = causal_attention(q, k, v, slopes, "sdpa")
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_flash_refuses_without_cuda():
    q = torch.randn(1, 2, 4, 8)
    with pytest.raises(RuntimeError, match="flash-attn and a CUDA device"):
        causal_attention(q, q, q, alibi_slopes(2), "flash")


@pytest.mark.gpu
def test_flash_matches_sdpa_on_gpu():
    pytest.importorskip("flash_attn")
    B, H, T, D = 2, 8, 256, 64
    q, k, v = (torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    slopes = alibi_slopes(H)
    ref = causal_attention(q, k, v, slopes, "sdpa")
    out = causal_attention(q, k, v, slopes, "flash")
    # bf16 accumulations in different orders: ~1e-2 absolute.
    torch.testing.assert_close(out, ref, atol=2e-2, rtol=2e-2)
