"""The min-CE objective on hand-computed examples: values, normalization, gradient routing."""

from __future__ import annotations

import math

import pytest
import torch

from loki.distill.objective import (
    MinCEConfig,
    candidate_metrics,
    min_ce_loss,
    min_over_candidates,
)


def _batch(V: int = 4) -> tuple[torch.Tensor, dict]:
    """One prompt, two candidates, T=3 (position 0 predicts the prompt: masked).

    candidate 0: labels [_, 1, 2] with uniform logits -> CE log V per token, 8 bytes
    candidate 1: labels [_, 3, _] with logit log(V-1) on token 3 -> p = 1/2, CE log 2, 1 byte
    """
    logits = torch.zeros(1, 2, 3, V)
    logits[0, 1, 1, 3] = math.log(V - 1)
    labels = torch.tensor([[[-100, 1, 2], [-100, 3, -100]]])
    batch = {"labels": labels, "n_bytes": torch.tensor([[8, 1]]),
             "source": torch.tensor([[0, 1]])}
    return logits, batch


def test_per_token_and_per_byte_pick_different_winners():
    logits, batch = _batch()
    tok = min_ce_loss(logits, batch, MinCEConfig(normalize="token"))
    assert tok.cand_loss[0].tolist() == pytest.approx([math.log(4), math.log(2)])
    assert tok.winner.tolist() == [1]
    assert float(tok.loss) == pytest.approx(math.log(2))
    byte = min_ce_loss(logits, batch, MinCEConfig(normalize="byte"))
    assert byte.cand_loss[0].tolist() == pytest.approx([2 * math.log(4) / 8, math.log(2)])
    assert byte.winner.tolist() == [0]
    assert float(byte.loss) == pytest.approx(math.log(4) / 4)


def test_gradient_reaches_only_the_winning_candidate():
    logits, batch = _batch()
    logits.requires_grad_(True)
    min_ce_loss(logits, batch, MinCEConfig(normalize="token")).loss.backward()
    g = logits.grad  # (P, k, T, V)
    assert torch.count_nonzero(g[0, 0]) == 0  # the loser gets nothing
    assert torch.count_nonzero(g[0, 1, 1]) > 0  # the winner's scored position does
    assert torch.count_nonzero(g[0, 1, 0]) == 0 and torch.count_nonzero(g[0, 1, 2]) == 0


def test_softmin_value_and_shared_gradient():
    logits, batch = _batch()
    logits.requires_grad_(True)
    tau = 0.5
    res = min_ce_loss(logits, batch, MinCEConfig(normalize="token"), temperature=tau)
    a, b = math.log(4), math.log(2)
    expected = -tau * math.log(math.exp(-a / tau) + math.exp(-b / tau))
    assert float(res.loss.detach()) == pytest.approx(expected, rel=1e-5)
    res.loss.backward()
    assert torch.count_nonzero(logits.grad[0, 0]) > 0 and torch.count_nonzero(logits.grad[0, 1]) > 0


def test_temperature_anneals_to_zero():
    cfg = MinCEConfig(softmin_temperature=1.0, softmin_anneal_steps=10)
    assert [cfg.temperature(s) for s in (0, 5, 10, 20)] == [1.0, 0.5, 0.0, 0.0]
    with pytest.raises(ValueError):
        MinCEConfig(normalize="word")


def test_padding_and_dropped_candidates_never_give_nan():
    V = 5
    logits = torch.randn(2, 3, 4, V, requires_grad=True)
    labels = torch.full((2, 3, 4), -100)
    labels[0, 0, 1:] = torch.tensor([1, 2, 3])  # sample 0: one real candidate, two all-padding
    n_bytes = torch.tensor([[6, 0, 0], [0, 0, 0]])  # sample 1: nothing at all
    batch = {"labels": labels, "n_bytes": n_bytes, "source": torch.tensor([[0, -1, -1]] * 2)}
    for temperature in (0.0, 0.7):
        res = min_ce_loss(logits, batch, MinCEConfig(), temperature)
        assert torch.isfinite(res.loss)
        assert res.has_any.tolist() == [True, False]
        logits.grad = None
        res.loss.backward()
        assert torch.isfinite(logits.grad).all()
    empty = {"labels": torch.full((1, 2, 3), -100), "n_bytes": torch.zeros(1, 2, dtype=torch.long)}
    res = min_ce_loss(torch.randn(1, 2, 3, V, requires_grad=True), empty, MinCEConfig())
    assert float(res.loss) == 0.0 and res.loss.requires_grad


def _soft_twin(V: int = 3) -> tuple[torch.Tensor, dict]:
    """Two candidates with the same text (label 0 at the one scored position); only candidate 1
    carries soft targets (uniform over the vocabulary). The student is uniform."""
    logits = torch.zeros(1, 2, 2, V)
    labels = torch.tensor([[[-100, 0], [-100, 0]]])
    soft_ids = torch.full((1, 2, 2, V), -1)
    soft_lp = torch.full((1, 2, 2, V), float("-inf"))
    soft_ids[0, 1, 1] = torch.arange(V)
    soft_lp[0, 1, 1] = math.log(1 / V)
    return logits, {"labels": labels, "n_bytes": torch.tensor([[1, 1]]),
                    "source": torch.tensor([[0, 1]]), "soft_ids": soft_ids,
                    "soft_logprobs": soft_lp}


def test_like_for_like_minimum_a_soft_twin_does_not_win_for_being_soft():
    logits, batch = _soft_twin()
    # the earlier reading: KL (0 here, the teacher's entropy left out) against CE (log 3)
    old = min_ce_loss(logits, batch, MinCEConfig(selection="kl"))
    assert old.cand_loss[0].tolist() == pytest.approx([math.log(3), 0.0], abs=1e-6)
    assert old.winner.tolist() == [1]
    # like for like: both scored by CE per byte; same text, same score; the tie goes to the first
    new = min_ce_loss(logits, batch, MinCEConfig())
    assert new.cand_loss[0].tolist() == pytest.approx([math.log(3)] * 2, abs=1e-6)
    assert new.winner.tolist() == [0]
    assert new.winners["kl"].tolist() == [1] and new.winners["ce"].tolist() == [0]
    assert float(new.loss) == pytest.approx(math.log(3))  # the winner has no soft targets: no KD
    metrics, counts = candidate_metrics(new, batch["source"], ["gt", "soft"])
    assert counts[:, 2].tolist() == [1, 0] and counts[:, 3].tolist() == [0, 1]  # wins ce / kl
    assert float(metrics["win_rate/gt"]) == 1.0


def test_soft_targets_add_kd_on_the_selected_candidate_only():
    logits, batch = _soft_twin()
    logits[0, 1, 1, 0] = 1.0  # the soft candidate's text is now likelier: it wins on CE
    soft_lp = batch["soft_logprobs"].clone()
    soft_lp[0, 1, 1] = torch.log(torch.tensor([0.6, 0.3, 0.1]))
    batch["soft_logprobs"] = soft_lp
    logits.requires_grad_(True)
    res = min_ce_loss(logits, batch, MinCEConfig(kd_weight=0.5))
    assert res.winner.tolist() == [1]
    s_logp = torch.log_softmax(logits[0, 1, 1].detach(), -1)
    ce = -float(s_logp[0])
    t = torch.tensor([0.6, 0.3, 0.1])
    kl = float((t * (t.log() - s_logp)).sum())
    assert float(res.loss) == pytest.approx(ce + 0.5 * kl, rel=1e-5)
    res.loss.backward()
    assert torch.count_nonzero(logits.grad[0, 0]) == 0  # the loser gets nothing, KD included
    no_kd = min_ce_loss(logits.detach(), batch, MinCEConfig(kd_weight=0.0))
    assert float(no_kd.loss) == pytest.approx(ce, rel=1e-5)
    with pytest.raises(ValueError):
        MinCEConfig(selection="both")


def test_min_over_candidates_ignores_invalid_and_metrics_per_source():
    cand = torch.tensor([[1.0, 0.5, 0.2], [0.3, 0.9, 0.0]])
    valid = torch.tensor([[True, True, False], [True, True, False]])
    loss, winner, has_any = min_over_candidates(cand, valid)
    assert loss.tolist() == pytest.approx([0.5, 0.3]) and winner.tolist() == [1, 0]
    from loki.distill.objective import MinCEResult

    res = MinCEResult(loss.mean(), cand, valid, winner, has_any)
    metrics, counts = candidate_metrics(res, torch.tensor([[0, 1, 2], [0, 1, 2]]), ["gt", "a", "b"])
    assert float(metrics["win_rate/gt"]) == 0.5 and float(metrics["win_rate/a"]) == 0.5
    assert float(metrics["win_rate/b"]) == 0.0 and float(metrics["loss/b"]) == 0.0
    assert float(metrics["loss/gt"]) == pytest.approx(0.65)
    assert float(metrics["gap"]) == pytest.approx(0.55)
    assert all(torch.is_tensor(v) for v in metrics.values())  # no host sync per step
    assert counts[1].tolist() == pytest.approx([1.4, 2, 1, 1])
