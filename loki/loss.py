"""LM head + cross-entropy without the full logits.

With a 32k vocabulary the fp32 logits of one 8 x 2048 micro-batch take 2 GiB (plus their bf16
copy and gradient). :func:`linear_cross_entropy` computes the head's matmul, the log-softmax and
the gradients one chunk of rows at a time, inside the forward pass (the approach of Liger's
fused linear cross-entropy, here in plain torch so that it runs on any device and under
``torch.compile``): only one chunk of logits is ever alive, and backward only scales the stored
gradients. The matmuls are the same three a plain head does (logits, grad of hidden, grad of
weight), so nothing is recomputed.
"""

from __future__ import annotations

from typing import Any

import torch

# Rows of logits computed at once: 2048 x 32000 fp32 is 0.25 GiB, an eighth of the full logits
# of an 8 x 2048 micro-batch; each chunk's matmul (2048 x 2048 x 32000) still fills a GPU.
CHUNK_ROWS = 2048


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
        ignore_index: int, chunk_rows: int,
    ) -> torch.Tensor:
        n_valid = (targets != ignore_index).sum().clamp(min=1)  # stays on the device
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        grad_hidden = torch.empty_like(hidden) if need_grad else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if need_grad else None
        for start in range(0, hidden.size(0), chunk_rows):
            h = hidden[start : start + chunk_rows]  # (n, C)
            t = targets[start : start + chunk_rows]  # (n,)
            logits = (h @ weight.t()).float()  # (n, V); under autocast the matmul is bf16
            valid = t != ignore_index
            safe_t = torch.where(valid, t, 0)
            lse = torch.logsumexp(logits, dim=-1)  # (n,)
            target_logit = logits.gather(1, safe_t[:, None]).squeeze(1)
            loss = loss + ((lse - target_logit) * valid).sum()
            if need_grad:
                # d(mean CE)/d logits = (softmax - onehot) / n_valid, zero on ignored rows;
                # in place: the chunk's logits are not needed any more (no autograd in here)
                grad = logits.sub_(lse[:, None]).exp_()
                grad.scatter_add_(1, safe_t[:, None], -torch.ones_like(lse)[:, None])
                grad *= (valid / n_valid).unsqueeze(1)
                grad = grad.to(h.dtype if h.dtype == weight.dtype else logits.dtype)
                grad_hidden[start : start + chunk_rows] = (grad @ weight.to(grad.dtype)).to(
                    hidden.dtype)
                grad_weight += (grad.t() @ h.to(grad.dtype)).float()
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return loss / n_valid

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        grad_hidden, grad_weight = ctx.saved_tensors
        gh = grad_hidden * grad_out.to(grad_hidden.dtype) if ctx.needs_input_grad[0] else None
        gw = (grad_weight * grad_out).to(ctx.weight_dtype) if ctx.needs_input_grad[1] else None
        return gh, gw, None, None, None


def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
    ignore_index: int = -100, chunk_rows: int = CHUNK_ROWS,
) -> torch.Tensor:
    """Mean cross-entropy of ``hidden @ weight.T`` against ``targets`` over the rows whose
    target is not ``ignore_index``, without materializing the logits.

    hidden (N, C), weight (V, C), targets (N,). Equal to
    ``F.cross_entropy((hidden @ weight.T).float(), targets, ignore_index=ignore_index)`` in value
    and gradients (fp32: to ~1e-6 relative; tests/test_loss.py)."""
    if chunk_rows <= 0:
        raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
    return _LinearCrossEntropy.apply(hidden, weight, targets, ignore_index, chunk_rows)
