"""The minimum-cross-entropy distillation objective.

A distillation micro-batch holds, for each of P prompts, k candidate continuations (the ground
truth and one per teacher), each laid out as prompt + continuation::

    input_ids  (P, k, T)  long
    labels     (P, k, T)  long, -100 on prompt positions, padding and dropped candidates
    n_bytes    (P, k)     UTF-8 bytes of each continuation (0: candidate absent)
    source     (P, k)     long, index into the cache's source names (-1: absent)
    soft_ids   (P, k, T, K) long, optional top-k soft targets aligned with labels (-1: none)
    soft_logprobs (P, k, T, K) float, their teacher log-probabilities

The student scores every candidate; a candidate's loss is its summed token loss divided by its
length (bytes by default, so a short candidate does not win for being short); the sample's loss
is the smallest candidate loss, so the gradient reaches the winning candidate only. An optional
softmin (temperature ``tau``, annealed to 0) spreads the gradient over near-ties early on.

Token loss is KL(target || student). For a one-hot target (ground truth, sampled teacher text)
that is the cross-entropy; for soft top-k targets it leaves out the teacher's entropy, because a
min over soft-target cross-entropies would always pick the one-hot ground truth (CE = H + KL).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

Normalize = Literal["byte", "token"]


@dataclass
class MinCEConfig:
    """How candidate losses are normalized and combined."""

    normalize: Normalize = "byte"
    """Divide a candidate's summed loss by its UTF-8 bytes ("byte") or its tokens ("token")."""
    softmin_temperature: float = 0.0
    """Initial softmin temperature in loss units (nats per byte or token); 0 = hard minimum."""
    softmin_anneal_steps: int = 0
    """Distillation steps over which the temperature decays linearly to 0 (0: stays constant)."""

    def __post_init__(self) -> None:
        if self.normalize not in ("byte", "token"):
            raise ValueError(f"normalize must be 'byte' or 'token', got {self.normalize!r}")
        if self.softmin_temperature < 0 or self.softmin_anneal_steps < 0:
            raise ValueError("softmin_temperature and softmin_anneal_steps must be >= 0")

    def temperature(self, distill_step: int) -> float:
        """Softmin temperature at the ``distill_step``-th distillation step (0-based)."""
        if self.softmin_anneal_steps <= 0:
            return self.softmin_temperature
        return self.softmin_temperature * max(0.0, 1.0 - distill_step / self.softmin_anneal_steps)


def token_losses(
    logits: torch.Tensor,
    labels: torch.Tensor,
    soft_ids: torch.Tensor | None = None,
    soft_logprobs: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-position loss (..., T): CE on hard labels, KL on positions with soft targets; 0 where
    the label is -100. logits (..., T, V)."""
    mask = labels != -100
    # cross_entropy gives 0 at ignore_index, and is the fused path when there are no soft targets
    loss = F.cross_entropy(logits.flatten(0, -2).float(), labels.flatten(), ignore_index=-100,
                           reduction="none").view(labels.shape)  # (..., T)
    if soft_ids is None or soft_logprobs is None:
        return loss
    logp = F.log_softmax(logits.float(), dim=-1)  # (..., T, V)
    valid = (soft_ids >= 0) & torch.isfinite(soft_logprobs)  # (..., T, K)
    has_soft = valid.any(-1) & mask  # (..., T)
    # Renormalize the teacher's top-k mass: the KL is over the candidates it named.
    t_logp = torch.where(valid, soft_logprobs.float(), torch.full_like(soft_logprobs.float(), -1e4))
    t_logp = t_logp - torch.logsumexp(t_logp, dim=-1, keepdim=True)
    t_p = t_logp.exp() * valid
    s_logp = logp.gather(-1, soft_ids.clamp(min=0))  # (..., T, K)
    kl = (t_p * (t_logp - s_logp)).sum(-1)  # (..., T)
    return torch.where(has_soft, kl, loss)


def candidate_losses(
    token_loss: torch.Tensor, labels: torch.Tensor, n_bytes: torch.Tensor,
    normalize: Normalize = "byte",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Length-normalized loss per candidate (P, k) and which candidates exist (P, k) bool.

    token_loss, labels: (P, k, T); n_bytes: (P, k). A candidate without scored tokens (all
    padding, dropped by the regeneration loop) is invalid and gets loss 0 (never NaN)."""
    n_tokens = (labels != -100).sum(-1)  # (P, k)
    length = n_bytes.to(token_loss.dtype) if normalize == "byte" else n_tokens.to(token_loss.dtype)
    valid = (n_tokens > 0) & (length > 0)
    loss = token_loss.sum(-1) / length.clamp(min=1)
    return torch.where(valid, loss, torch.zeros_like(loss)), valid


def min_over_candidates(
    cand_loss: torch.Tensor, valid: torch.Tensor, temperature: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sample loss (P,), winner index (P,), sample has a candidate (P,) bool).

    temperature 0: the minimum (gradient to the argmin only); > 0: the softmin
    -tau * logsumexp(-L / tau), whose gradient weights are softmax(-L / tau)."""
    big = torch.finfo(cand_loss.dtype).max / 4
    masked = torch.where(valid, cand_loss, torch.full_like(cand_loss, big))  # (P, k)
    winner = masked.detach().argmin(-1)  # (P,)
    has_any = valid.any(-1)
    if temperature > 0:
        neg = torch.where(valid, -cand_loss / temperature, torch.full_like(cand_loss, -big))
        loss = -temperature * torch.logsumexp(neg, dim=-1)
    else:
        loss = masked.gather(-1, winner.unsqueeze(-1)).squeeze(-1)
    return torch.where(has_any, loss, torch.zeros_like(loss)), winner, has_any


@dataclass
class MinCEResult:
    """What one distillation micro-batch produced (tensors detached except ``loss``)."""

    loss: torch.Tensor
    cand_loss: torch.Tensor
    valid: torch.Tensor
    winner: torch.Tensor
    has_any: torch.Tensor


def min_ce_loss(
    logits: torch.Tensor, batch: dict, config: MinCEConfig, temperature: float = 0.0,
) -> MinCEResult:
    """The objective on student logits (P, k, T, V) for a micro-batch laid out as above."""
    labels = batch["labels"]
    tok = token_losses(logits, labels, batch.get("soft_ids"), batch.get("soft_logprobs"))
    cand, valid = candidate_losses(tok, labels, batch["n_bytes"], config.normalize)  # (P, k)
    per_sample, winner, has_any = min_over_candidates(cand, valid, temperature)
    # Mean over samples that have a candidate; a batch with none still returns a graph-connected 0.
    count = has_any.sum().clamp(min=1)
    loss = per_sample.sum() / count + 0.0 * logits.sum()
    return MinCEResult(loss, cand.detach(), valid, winner, has_any)


def candidate_metrics(
    result: MinCEResult, source: torch.Tensor, names: list[str],
) -> tuple[dict[str, float], dict[str, tuple[float, int, int]]]:
    """Per-source mean candidate loss and win rate, the best-vs-second gap (metrics: every name
    always appears, the same keys on every rank for synced logging), and per source the raw
    (loss sum, candidates, wins) for running totals."""
    cand, valid, winner, has_any = result.cand_loss, result.valid, result.winner, result.has_any
    win_source = source.gather(-1, winner.unsqueeze(-1)).squeeze(-1)  # (P,)
    n_samples = int(has_any.sum())
    out: dict[str, float] = {"samples": float(n_samples)}
    counts: dict[str, tuple[float, int, int]] = {}
    for i, name in enumerate(names):
        present = valid & (source == i)
        n = int(present.sum())
        wins = int(((win_source == i) & has_any).sum())
        loss_sum = float(cand[present].sum()) if n else 0.0
        counts[name] = (loss_sum, n, wins)
        out[f"loss/{name}"] = loss_sum / n if n else 0.0
        out[f"win_rate/{name}"] = wins / n_samples if n_samples else 0.0
    two = valid.sum(-1) >= 2
    if bool(two.any()):
        big = torch.finfo(cand.dtype).max / 4
        top2 = torch.where(valid, cand, torch.full_like(cand, big)).topk(2, -1, largest=False)
        out["gap"] = float((top2.values[:, 1] - top2.values[:, 0])[two].mean())
    else:
        out["gap"] = 0.0
    return out, counts
