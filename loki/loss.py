"""LM head + cross-entropy without the full logits.

With a 32k vocabulary the fp32 logits of one 8 x 2048 micro-batch take 2 GiB (plus their bf16
copy and gradient). :func:`linear_cross_entropy` computes the head's matmul, the log-softmax and
the gradients one chunk of rows at a time, inside the forward pass (the approach of Liger's
fused linear cross-entropy, here in plain torch so that it runs on any device and under
``torch.compile``): only one chunk of logits is ever alive, and backward only scales the stored
gradients. The matmuls are the same three a plain head does (logits, grad of hidden, grad of
weight), so nothing is recomputed.

Between the matmuls, a chunk's log-softmax and its gradient are written as one function of the
logits (:func:`chunk_loss_and_grad`). On CUDA it is compiled: Inductor reads the chunk's logits
twice (the log-sum-exp, then the gradient) and writes the gradient once, where eager torch
makes a pass per operation.
"""

from __future__ import annotations

import functools
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
        # the gradient's dtype: the matmuls' (bf16 under FSDP2 or autocast), else fp32
        grad_dtype = hidden.dtype if hidden.dtype == weight.dtype else torch.float32
        step = _chunk_function(hidden.device)
        for start in range(0, hidden.size(0), chunk_rows):
            h = hidden[start : start + chunk_rows]  # (n, C)
            logits = h @ weight.t()  # (n, V); under autocast the matmul is bf16
            chunk_loss, grad = step(logits, targets[start : start + chunk_rows], n_valid,
                                    ignore_index, grad_dtype if need_grad else None)
            loss = loss + chunk_loss
            if need_grad:
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


def chunk_loss_and_grad(
    logits: torch.Tensor, targets: torch.Tensor, n_valid: torch.Tensor, ignore_index: int,
    grad_dtype: torch.dtype | None, fused: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One chunk: the summed cross-entropy of ``logits`` (n, V) against ``targets`` (n,) in fp32,
    and (unless ``grad_dtype`` is None) d(sum CE / n_valid)/d logits in ``grad_dtype``:
    (softmax - onehot) / n_valid on rows whose target is not ``ignore_index``, zero on the rest.

    ``fused``: written for a compiler (the one-hot is a comparison with the column index, so the
    whole gradient is one pointwise kernel). Otherwise written for eager torch: in place on the
    fp32 logits, which are not needed afterwards (no autograd runs in here), to keep one
    (n, V) buffer alive instead of several."""
    x = logits.float()
    valid = targets != ignore_index
    safe_t = torch.where(valid, targets, 0)
    lse = torch.logsumexp(x, dim=-1)  # (n,)
    target_logit = x.gather(1, safe_t[:, None]).squeeze(1)
    loss = ((lse - target_logit) * valid).sum()
    if grad_dtype is None:
        return loss, None
    row_scale = (valid / n_valid)[:, None]  # 1 / n_valid, 0 on ignored rows
    if fused:
        onehot = torch.arange(x.size(1), device=x.device)[None, :] == safe_t[:, None]
        grad = (torch.exp(x - lse[:, None]) - onehot.float()) * row_scale
    else:
        grad = x.sub_(lse[:, None]).exp_().mul_(row_scale)
        grad.scatter_add_(1, safe_t[:, None], -row_scale)
    return loss, grad.to(grad_dtype)


@functools.lru_cache(maxsize=1)
def _compiled_chunk_function() -> Any:
    return torch.compile(functools.partial(chunk_loss_and_grad, fused=True))


def _chunk_function(device: torch.device) -> Any:
    """Compiled and fused on CUDA; eager elsewhere. Inside a compiled model (being traced) the
    fused form is traced into the model's graph."""
    if torch.compiler.is_compiling():
        return functools.partial(chunk_loss_and_grad, fused=True)
    if device.type == "cuda":
        return _compiled_chunk_function()
    return chunk_loss_and_grad


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
