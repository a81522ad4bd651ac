"""rl/losses.py: exact hand-worked values, aggregation modes, no leaks from masked positions, clipping."""

from __future__ import annotations

import math

import pytest
import torch

from dreamgym.rl.losses import (aggregate, clipped_pg_loss, entropy_from_logits, explained_variance,
                                kl_penalty, masked_mean, masked_sum, value_loss)

LN2 = math.log(2.0)


def _logp_for_ratios(ratios: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """(logp with grad, old_logp) whose exp-difference gives `ratios`, one row."""
    old = torch.full((1, len(ratios)), -1.0, dtype=torch.float64)
    return (old + torch.tensor([ratios], dtype=torch.float64).log()).requires_grad_(), old


def test_clipped_pg_loss_style_guide_value():
    logp, old = _logp_for_ratios([1.5, 0.9])
    loss, stats = clipped_pg_loss(logp, old, torch.ones(1, 2), torch.ones(1, 2), clip_eps=0.2)
    assert loss.item() == pytest.approx(-1.05)                     # (-1.2 clipped + -0.9) / 2
    assert stats["clipfrac"] == 0.5 and stats["dual_clipfrac"] == 0.0
    assert stats["ratio_mean"] == pytest.approx(1.2)
    assert stats["approx_kl"] == pytest.approx(((0.5 - math.log(1.5)) + (-0.1 - math.log(0.9))) / 2)
    loss.backward()                                                 # clipped token: no gradient
    assert logp.grad[0].tolist() == pytest.approx([0.0, -0.9 / 2])  # d(-r)/dlogp = -r, token mean


def test_clip_boundaries_and_clip_higher():
    a, m = torch.tensor([[1.0, 1.0, -1.0, -1.0]]), torch.ones(1, 4)
    logp, old = _logp_for_ratios([1.19, 1.21, 0.81, 0.79])         # just inside / outside [0.8, 1.2]
    loss, stats = clipped_pg_loss(logp, old, a, m, clip_eps=0.2)
    assert loss.item() == pytest.approx((-1.19 - 1.2 + 0.81 + 0.8) / 4)   # A < 0: max(-A r, -A clip r)
    assert stats["clipfrac"] == 0.5
    logp, old = _logp_for_ratios([1.25, 1.5, 0.79, 1.3])
    loss, stats = clipped_pg_loss(logp, old, a, m, clip_eps=0.2, clip_eps_high=0.28)   # range [0.8, 1.28]
    assert loss.item() == pytest.approx((-1.25 - 1.28 + 0.8 + 1.3) / 4)
    assert stats["clipfrac"] == 0.75                                # 1.5, 0.79, 1.3 left [0.8, 1.28]
    loss.backward()                                                 # clip active on 1.5 and 0.79 only
    assert logp.grad[0].tolist() == pytest.approx([-1.25 / 4, 0.0, 0.0, 1.3 / 4])


def test_dual_clip_caps_negative_advantages_only():
    a, m = torch.tensor([[-1.0, 1.0]]), torch.ones(1, 2)
    logp, old = _logp_for_ratios([5.0, 5.0])
    plain, _ = clipped_pg_loss(logp, old, a, m, clip_eps=0.2)
    assert plain.item() == pytest.approx((5.0 - 1.2) / 2)          # A < 0: -A r = 5 unbounded
    loss, stats = clipped_pg_loss(logp, old, a, m, clip_eps=0.2, dual_clip_c=3.0)
    assert loss.item() == pytest.approx((3.0 - 1.2) / 2)           # capped at -A c = 3
    assert stats["dual_clipfrac"] == 0.5
    loss.backward()
    assert logp.grad.tolist() == [[0.0, 0.0]]
    with pytest.raises(ValueError, match="dual_clip_c=1.0"):
        clipped_pg_loss(logp, old, a, m, clip_eps=0.2, dual_clip_c=1.0)


def test_aggregation_modes_give_their_own_exact_values():
    loss_mat = torch.tensor([[1.0, 2.0, 3.0, 50.0], [4.0, 60.0, 70.0, 80.0], [90.0, 90.0, 90.0, 90.0]])
    m = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])    # 3 and 1 valid tokens, an empty row
    assert aggregate(loss_mat, m, "token-mean").item() == 2.5          # 10 / 4 tokens
    assert aggregate(loss_mat, m, "seq-mean-token-sum").item() == 5.0  # (6 + 4) / 2 sequences
    assert aggregate(loss_mat, m, "seq-mean-token-mean").item() == 3.0  # (2 + 4) / 2 sequences
    # the same through the policy loss (ratio 1: per-token loss is -A)
    logp = torch.zeros(3, 4)
    for mode, expected in [("token-mean", -2.5), ("seq-mean-token-sum", -5.0), ("seq-mean-token-mean", -3.0)]:
        assert clipped_pg_loss(logp, logp, loss_mat, m, 0.2, aggregation=mode)[0].item() == expected
    with pytest.raises(ValueError, match="seq-mean-token-mean"):
        aggregate(loss_mat, m, "seq-mean")


def test_masked_sum_and_mean():
    x, m = torch.tensor([[1.0, 2.0, float("nan")], [4.0, 5.0, 6.0]]), torch.tensor([[1, 1, 0], [0, 0, 1]])
    assert masked_sum(x, m).item() == 9.0 and masked_mean(x, m).item() == 3.0
    assert masked_sum(x, m, dim=-1).tolist() == [3.0, 6.0]
    assert masked_mean(x, m, dim=-1).tolist() == [1.5, 6.0]
    assert masked_mean(x, torch.zeros(2, 3)).item() == 0.0
    assert masked_mean(x, torch.tensor([[1, 0, 0], [0, 0, 0]]), dim=-1).tolist() == [1.0, 0.0]


def test_value_loss_exact_clipped_and_unclipped():
    v = torch.tensor([[1.0, 1.6]], requires_grad=True)
    old, ret, m = torch.tensor([[1.5, 1.5]]), torch.tensor([[0.0, 3.0]]), torch.ones(1, 2)
    loss, stats = value_loss(v, old, ret, m)
    assert loss.item() == pytest.approx(0.5 * (1.0 + 1.96) / 2) and stats["value_clipfrac"] == 0.0
    # clip 0.2: token 0's V_clip = 1.3 -> (1.3 - 0)^2 = 1.69 > 1 wins; token 1 moved 0.1, unclipped
    loss, stats = value_loss(v, old, ret, m, clip_range=0.2)
    assert loss.item() == pytest.approx(0.5 * (1.69 + 1.96) / 2) and stats["value_clipfrac"] == 0.5
    loss.backward()
    assert v.grad[0].tolist() == pytest.approx([0.0, 0.5 * 2 * (1.6 - 3.0) / 2])


def test_explained_variance_exact():
    ret, m = torch.tensor([[1.0, 2.0, 3.0, 9.0]]), torch.tensor([[1, 1, 1, 0]])
    assert explained_variance(torch.tensor([[1.0, 2.0, 3.0, -5.0]]), ret, m) == 1.0
    # residuals [-0.5, 0, 0.5]: var 1/6 against var(returns) 2/3
    assert explained_variance(torch.tensor([[1.5, 2.0, 2.5, 0.0]]), ret, m) == pytest.approx(0.75)
    assert explained_variance(torch.zeros(1, 4), ret, m) == pytest.approx(0.0)     # a constant: no better
    assert explained_variance(torch.tensor([[3.0, 2.0, 1.0, 0.0]]), ret, m) == pytest.approx(-3.0)  # 1 - (8/3)/(2/3)
    assert explained_variance(ret, torch.ones(1, 4), m) == 0.0      # constant returns: undefined -> 0
    assert explained_variance(ret, ret, torch.tensor([[1, 0, 0, 0]])) == 0.0


def test_kl_estimators_exact():
    logp, ref = torch.zeros(1, 2, dtype=torch.float64), torch.tensor([[LN2, -LN2]], dtype=torch.float64)
    m = torch.ones(1, 2)
    assert kl_penalty(logp, ref, m, "k1")[0].item() == pytest.approx(0.0)           # -ln2 and ln2
    assert kl_penalty(logp, ref, m, "k2")[0].item() == pytest.approx(0.5 * LN2 ** 2)
    loss, stats = kl_penalty(logp, ref, m, "k3")                    # (1 - ln2) and (ln2 - 0.5)
    assert loss.item() == pytest.approx(0.25) and stats["kl"] == pytest.approx(0.25)
    assert kl_penalty(logp, ref, m, "low_var_kl")[0].item() == pytest.approx(0.25)
    far = torch.tensor([[30.0]])                                    # k3 = e^30 - 31; low_var_kl caps at 10
    assert kl_penalty(torch.zeros(1, 1), far, torch.ones(1, 1), "low_var_kl")[0].item() == 10.0
    with pytest.raises(ValueError, match="low_var_kl"):
        kl_penalty(logp, ref, m, "k4")


def test_k3_is_non_negative_and_zero_with_zero_gradient_at_equality():
    g = torch.Generator().manual_seed(0)
    logp, ref = torch.randn(4, 16, generator=g) * 3, torch.randn(4, 16, generator=g) * 3
    m = torch.ones(4, 16)
    per_token = [kl_penalty(logp[:, i:i + 1], ref[:, i:i + 1], m[:, :1], "k3")[0].item() for i in range(16)]
    assert min(per_token) >= 0.0
    same = ref.clone().requires_grad_()
    loss, _ = kl_penalty(same, ref, m, "k3")
    loss.backward()
    assert loss.item() == 0.0 and same.grad.abs().sum() == 0


def test_entropy_exact_stable_and_chunked():
    logits = torch.tensor([[[0.0, 0.0, 0.0], [0.0, math.log(3.0), -200.0]]])   # uniform; [1/4, 3/4, ~0]
    m = torch.ones(1, 2)
    loss, stats = entropy_from_logits(logits, m)
    h2 = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert loss.item() == pytest.approx((math.log(3.0) + h2) / 2, abs=1e-6) and stats["entropy"] == loss.item()
    big = torch.tensor([[[1000.0, 0.0, -1000.0]]])                  # no overflow: entropy ~ 0, finite
    assert entropy_from_logits(big, torch.ones(1, 1))[0].item() == pytest.approx(0.0, abs=1e-6)
    g = torch.Generator().manual_seed(0)
    z, m = torch.randn(2, 5, 7, generator=g) * 4, torch.tensor([[1, 1, 0, 1, 0], [0, 1, 1, 1, 1]])
    for mode in ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean"):
        full = entropy_from_logits(z, m, mode)[0]
        torch.testing.assert_close(entropy_from_logits(z, m, mode, chunk_size=3)[0], full)


def _all_losses(logp, old, adv, values, old_values, returns, ref, logits, m):
    yield clipped_pg_loss(logp, old, adv, m, 0.2, clip_eps_high=0.3, dual_clip_c=3.0)
    yield clipped_pg_loss(logp, old, adv, m, 0.2, aggregation="seq-mean-token-mean")
    yield value_loss(values, old_values, returns, m, clip_range=0.2, aggregation="seq-mean-token-sum")
    for est in ("k1", "k2", "k3", "low_var_kl"):
        yield kl_penalty(logp, ref, m, est)
    yield entropy_from_logits(logits, m, chunk_size=2)


def test_masked_positions_change_nothing_and_get_zero_gradient():
    g = torch.Generator().manual_seed(0)
    m = torch.tensor([[0, 1, 1, 0, 1], [1, 1, 0, 0, 0]])
    tensors = [torch.randn(2, 5, generator=g) * 0.3 for _ in range(7)] + [torch.randn(2, 5, 6, generator=g)]
    garbage = [t.clone() for t in tensors]
    for t in garbage:
        t[m == 0] = float("nan")                                     # NaN leaks into anything it touches
    garbage[0][0, 0], garbage[4][1, 4] = 1e6, -1e6                   # and huge finite values
    clean_out = list(_all_losses(*tensors, m))
    leaves = [garbage[0].requires_grad_(), garbage[3].requires_grad_(), garbage[7].requires_grad_()]
    dirty_out = list(_all_losses(*garbage, m))
    for (a, sa), (b, sb) in zip(clean_out, dirty_out):
        assert a.item() == pytest.approx(b.item()) and sa == pytest.approx(sb)
    sum(loss for loss, _ in dirty_out).backward()
    for leaf in leaves:                                             # logp, values, logits
        grad = leaf.grad.abs() if leaf.dim() == 2 else leaf.grad.abs().sum(-1)
        assert torch.isfinite(leaf.grad).all() and grad[m == 0].sum() == 0 and grad[m == 1].sum() > 0


def test_empty_mask_gives_zero_losses_not_nan():
    logp = torch.randn(2, 3, requires_grad=True)
    values, logits = torch.randn(2, 3, requires_grad=True), torch.randn(2, 3, 5, requires_grad=True)
    m, z = torch.zeros(2, 3), torch.randn(2, 3)
    outs = list(_all_losses(logp, z, z, values, z, z, z, logits, m))
    outs.append(clipped_pg_loss(logp, z, z, m, 0.2, aggregation="seq-mean-token-sum"))
    for loss, stats in outs:
        assert loss.item() == 0.0 and all(v == 0.0 for v in stats.values())
    sum(loss for loss, _ in outs).backward()
    assert logp.grad.abs().sum() == 0 and values.grad.abs().sum() == 0 and logits.grad.abs().sum() == 0
