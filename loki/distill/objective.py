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

Selection (``MinCEConfig.selection``):

- ``"ce"`` (default, like for like): every candidate is scored by the student's cross-entropy per
  byte on its own tokens, whether or not a teacher gave soft targets for it. Soft top-k targets
  then add a KD term, ``kd_weight x KL(teacher top-k || student)`` per byte, on the *selected*
  candidate only; they never take part in choosing it. The paper's objective is "the minimum
  cross-entropy over the ground truth and the teachers' outputs", and only a CE is comparable
  across candidates: KL leaves out the teacher's entropy H (CE = H + KL), so it can reach 0 where
  CE cannot, and a soft-target candidate would win by construction, whatever its text.
- ``"kl"`` (the earlier reading, kept for comparison): positions with soft targets score KL
  inside the minimum.

The demo report gives the win rate by source under both scorings (``wins_ce`` / ``wins_kl``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

Normalize = Literal["byte", "token"]
Selection = Literal["ce", "kl"]
SCORINGS = ("ce", "kl")


@dataclass
class MinCEConfig:
    """How candidate losses are normalized and combined."""

    normalize: Normalize = "byte"
    """Divide a candidate's summed loss by its UTF-8 bytes ("byte") or its tokens ("token")."""
    softmin_temperature: float = 0.0
    """Initial softmin temperature in loss units (nats per byte or token); 0 = hard minimum."""
    softmin_anneal_steps: int = 0
    """Distillation steps over which the temperature decays linearly to 0 (0: stays constant)."""
    selection: Selection = "ce"
    """How candidates are compared: "ce" (like for like, soft targets add KD on the winner) or
    "kl" (soft-target positions score KL inside the minimum)."""
    kd_weight: float = 1.0
    """Weight of the KD term on the selected candidate's soft targets ("ce" selection)."""

    def __post_init__(self) -> None:
        if self.normalize not in ("byte", "token"):
            raise ValueError(f"normalize must be 'byte' or 'token', got {self.normalize!r}")
        if self.selection not in SCORINGS:
            raise ValueError(f"selection must be 'ce' or 'kl', got {self.selection!r}")
        if self.kd_weight < 0:
            raise ValueError("kd_weight must be >= 0")
        if self.softmin_temperature < 0 or self.softmin_anneal_steps < 0:
            raise ValueError("softmin_temperature and softmin_anneal_steps must be >= 0")

    def temperature(self, distill_step: int) -> float:
        """Softmin temperature at the ``distill_step``-th distillation step (0-based)."""
        if self.softmin_anneal_steps <= 0:
            return self.softmin_temperature
        return self.softmin_temperature * max(0.0, 1.0 - distill_step / self.softmin_anneal_steps)


def soft_kl(
    logits: torch.Tensor, labels: torch.Tensor, soft_ids: torch.Tensor,
    soft_logprobs: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(KL(teacher top-k || student) per position (..., T), position has soft targets (..., T)).

    The teacher's top-k mass is renormalized: the KL is over the candidates it named."""
    mask = labels != -100
    logp = F.log_softmax(logits.float(), dim=-1)  # (..., T, V)
    valid = (soft_ids >= 0) & torch.isfinite(soft_logprobs)  # (..., T, K)
    has_soft = valid.any(-1) & mask  # (..., T)
    t_logp = torch.where(valid, soft_logprobs.float(), torch.full_like(soft_logprobs.float(), -1e4))
    t_logp = t_logp - torch.logsumexp(t_logp, dim=-1, keepdim=True)
    t_p = t_logp.exp() * valid
    s_logp = logp.gather(-1, soft_ids.clamp(min=0))  # (..., T, K)
    kl = (t_p * (t_logp - s_logp)).sum(-1)  # (..., T)
    return torch.where(has_soft, kl, torch.zeros_like(kl)), has_soft


def hard_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-position cross-entropy (..., T) on hard labels, 0 where the label is -100."""
    # cross_entropy gives 0 at ignore_index, and is the fused path
    return F.cross_entropy(logits.flatten(0, -2).float(), labels.flatten(), ignore_index=-100,
                           reduction="none").view(labels.shape)


def token_losses(
    logits: torch.Tensor,
    labels: torch.Tensor,
    soft_ids: torch.Tensor | None = None,
    soft_logprobs: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-position loss of the "kl" selection (..., T): CE on hard labels, KL on positions with
    soft targets; 0 where the label is -100. logits (..., T, V)."""
    loss = hard_ce(logits, labels)
    if soft_ids is None or soft_logprobs is None:
        return loss
    kl, has_soft = soft_kl(logits, labels, soft_ids, soft_logprobs)
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
    """What one distillation micro-batch produced (tensors detached except ``loss``).

    ``winner`` is the candidate the configured selection chose; ``winners`` holds the choice
    under each scoring ("ce" and "kl"; the same tensor when there are no soft targets)."""

    loss: torch.Tensor
    cand_loss: torch.Tensor
    valid: torch.Tensor
    winner: torch.Tensor
    has_any: torch.Tensor
    winners: dict[str, torch.Tensor] | None = None
    selection: Selection = "ce"


def min_ce_loss(
    logits: torch.Tensor, batch: dict, config: MinCEConfig, temperature: float = 0.0,
) -> MinCEResult:
    """The objective on student logits (P, k, T, V) for a micro-batch laid out as above."""
    labels = batch["labels"]
    ce = hard_ce(logits, labels)  # (P, k, T)
    cand, valid = candidate_losses(ce, labels, batch["n_bytes"], config.normalize)  # (P, k)
    ce_cand = cand
    soft = batch.get("soft_ids") is not None and batch.get("soft_logprobs") is not None
    kl_cand = None
    if soft:
        kl, has_soft = soft_kl(logits, labels, batch["soft_ids"], batch["soft_logprobs"])
        kl_cand, _ = candidate_losses(kl, labels, batch["n_bytes"], config.normalize)
        mixed, _ = candidate_losses(torch.where(has_soft, kl, ce), labels, batch["n_bytes"],
                                    config.normalize)
    if soft and config.selection == "kl":
        cand = mixed
    per_sample, winner, has_any = min_over_candidates(cand, valid, temperature)
    winners = {config.selection: winner}
    if soft:
        other = "kl" if config.selection == "ce" else "ce"
        alt = mixed if other == "kl" else ce_cand
        winners[other] = min_over_candidates(alt.detach(), valid)[1]
        if config.selection == "ce" and config.kd_weight > 0:
            # KD on the selected candidate only (its soft-target positions; 0 elsewhere)
            kd = kl_cand.gather(-1, winner.unsqueeze(-1)).squeeze(-1)
            per_sample = per_sample + config.kd_weight * torch.where(has_any, kd,
                                                                     torch.zeros_like(kd))
    else:
        winners[{"ce": "kl", "kl": "ce"}[config.selection]] = winner
    # Mean over samples that have a candidate; a batch with none still returns a graph-connected 0.
    count = has_any.sum().clamp(min=1)
    loss = per_sample.sum() / count + 0.0 * logits.sum()
    return MinCEResult(loss, cand.detach(), valid, winner, has_any, winners, config.selection)


def candidate_metrics(
    result: MinCEResult, source: torch.Tensor, names: list[str],
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Per-source mean candidate loss and win rate, and the best-vs-second gap, as device
    tensors (no host sync: every name always appears, the same keys on every rank), and the raw
    per-source counts (len(names), 4): loss sum, candidates, wins under "ce", wins under "kl"
    (for running totals, summed on the device)."""
    cand, valid, has_any = result.cand_loss, result.valid, result.has_any
    winners = result.winners or {"ce": result.winner, "kl": result.winner}
    n_samples = has_any.sum()
    ids = torch.arange(len(names), device=source.device)
    present = valid.unsqueeze(-1) & (source.unsqueeze(-1) == ids)  # (P, k, S)
    loss_sum = (cand.unsqueeze(-1) * present).sum((0, 1))  # (S,)
    n = present.sum((0, 1))  # (S,)
    wins = []
    for scoring in SCORINGS:
        win_source = source.gather(-1, winners[scoring].unsqueeze(-1))  # (P, 1)
        wins.append(((win_source == ids) & has_any.unsqueeze(-1)).sum(0))  # (S,)
    counts = torch.stack([loss_sum.double(), n.double(), wins[0].double(), wins[1].double()], -1)
    per_loss = loss_sum / n.clamp(min=1)
    rate = wins[SCORINGS.index(result.selection)] / n_samples.clamp(min=1)
    out: dict[str, torch.Tensor] = {"samples": n_samples.float()}
    for i, name in enumerate(names):
        out[f"loss/{name}"] = per_loss[i]
        out[f"win_rate/{name}"] = rate[i]
    big = torch.finfo(cand.dtype).max / 4
    two = valid.sum(-1) >= 2
    if cand.size(-1) >= 2:
        top2 = torch.where(valid, cand, torch.full_like(cand, big)).topk(2, -1, largest=False)
        gaps = torch.where(two, top2.values[:, 1] - top2.values[:, 0], torch.zeros_like(cand[:, 0]))
        out["gap"] = gaps.sum() / two.sum().clamp(min=1)
    else:
        out["gap"] = cand.new_zeros(())
    return out, counts
