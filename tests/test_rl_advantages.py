"""rl/advantages.py: exact hand-worked values, masked positions ignored, bad group sizes rejected."""

from __future__ import annotations

import pytest
import torch

from dreamgym.rl.advantages import (broadcast_sequence_advantages, filter_zero_variance_groups, gae,
                                    group_advantages, group_reward_std, masked_mean_std, turn_rewards_to_tokens,
                                    whiten)


def test_gae_exact_and_blind_to_masked_positions():                 # style guide §4
    r, m = torch.tensor([[0.0, 0.0, 0.0, 1.0]]), torch.tensor([[1.0, 0.0, 1.0, 1.0]])
    v = torch.tensor([[0.5, 99.0, 0.5, 0.5]])                      # 99 sits on an observation token
    adv, _ = gae(r, v, m, gamma=1.0, lam=1.0)
    torch.testing.assert_close(adv, torch.tensor([[0.5, 0.0, 0.5, 0.5]]))   # 1 - 0.5 per policy token
    v[0, 1] = -7.0
    torch.testing.assert_close(gae(r, v, m, 1.0, 1.0)[0], adv)


def test_gae_discounted_three_steps_exact():
    # gamma = lam = 0.5, V = [1, 2, 4], outcome reward 1 on the last token:
    # t=2: delta = 1 + 0 - 4 = -3                 A2 = -3
    # t=1: delta = 0 + 0.5 * 4 - 2 = 0            A1 = 0 + 0.25 * -3 = -0.75
    # t=0: delta = 0 + 0.5 * 2 - 1 = 0            A0 = 0 + 0.25 * -0.75 = -0.1875
    r, v, m = torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[1.0, 2.0, 4.0]]), torch.ones(1, 3)
    adv, ret = gae(r, v, m, gamma=0.5, lam=0.5)
    assert adv.tolist() == [[-0.1875, -0.75, -3.0]]
    assert ret.tolist() == [[0.8125, 1.25, 1.0]]                    # A + V


def test_gae_observation_tokens_are_transparent():
    # The 3-step example with an observation token (reward 5, value 99) between turns: same numbers.
    r, v = torch.tensor([[0.0, 0.0, 5.0, 1.0]]), torch.tensor([[1.0, 2.0, 99.0, 4.0]])
    m = torch.tensor([[1, 1, 0, 1]])
    adv, ret = gae(r, v, m, gamma=0.5, lam=0.5)
    assert adv.tolist() == [[-0.1875, -0.75, 0.0, -3.0]]
    assert ret.tolist() == [[0.8125, 1.25, 0.0, 1.0]]


def test_gae_matches_plain_gae_on_the_sampled_tokens_and_carries_no_gradient():
    g = torch.Generator().manual_seed(0)
    r, v = torch.randn(3, 7, generator=g), torch.randn(3, 7, generator=g).requires_grad_()
    m = torch.tensor([[0, 1, 1, 0, 0, 1, 1], [1, 1, 1, 1, 1, 0, 0], [0] * 7])   # last row: all padding
    adv, ret = gae(r, v, m, gamma=0.9, lam=0.95)
    assert not adv.requires_grad and not ret.requires_grad
    for b in range(3):
        idx = m[b].nonzero().flatten().tolist()
        expected, running, next_v = {}, 0.0, 0.0
        for t in reversed(idx):                                     # textbook GAE on the compacted row
            running = r[b, t].item() + 0.9 * next_v - v[b, t].item() + 0.9 * 0.95 * running
            next_v, expected[t] = v[b, t].item(), running
        for t in range(7):
            assert adv[b, t].item() == pytest.approx(expected.get(t, 0.0), abs=1e-5)
    assert adv[2].abs().sum() == 0 and ret[2].abs().sum() == 0


def test_group_advantages_exact():                                  # group 0: mean 1/3, std 1/sqrt(3)
    adv, zero_var = group_advantages(torch.tensor([1.0, 0, 0, 1, 1, 1]), group_size=3)
    torch.testing.assert_close(adv, torch.tensor([2.0, -1, -1, 0, 0, 0]) / 3 ** 0.5, rtol=0, atol=1e-5)
    assert zero_var.tolist() == [False, True]                      # no signal: logged and filtered


def test_group_advantages_mean_only_and_exact_zero_for_identical_scores():
    adv, _ = group_advantages(torch.tensor([1.0, 0, 0, 1, 1, 1]), group_size=3, normalize_std=False)
    torch.testing.assert_close(adv, torch.tensor([2.0, -1, -1, 0, 0, 0]) / 3)
    adv, zero_var = group_advantages(torch.tensor([0.1, 0.1, 0.1, 0.7, 0.7, 0.7]), group_size=3)
    assert adv.tolist() == [0.0] * 6 and zero_var.tolist() == [True, True]   # not 1e-11 from rounding
    adv, zero_var = group_advantages(torch.tensor([0.0, 2.0]), group_size=2)  # unbiased std sqrt(2)
    torch.testing.assert_close(adv, torch.tensor([-1.0, 1.0]) / 2 ** 0.5, rtol=0, atol=1e-5)


def test_group_advantages_rejects_bad_sizes():
    with pytest.raises(ValueError, match="group_size=4"):
        group_advantages(torch.zeros(6), group_size=4)
    with pytest.raises(ValueError, match="group_size=3"):
        group_advantages(torch.zeros(2, 3), group_size=3)
    with pytest.raises(ValueError, match="group_size=1"):
        group_advantages(torch.zeros(6), group_size=1)


def test_filter_zero_variance_groups_keep_mask_and_share():
    keep, share = filter_zero_variance_groups(torch.tensor([False, True, False, True]), group_size=2)
    assert keep.tolist() == [True, True, False, False, True, True, False, False]
    assert share == 0.5
    keep, share = filter_zero_variance_groups(torch.zeros(0, dtype=torch.bool), group_size=2)
    assert keep.numel() == 0 and share == 0.0


def test_broadcast_sequence_advantages_fills_sampled_tokens_only():
    out = broadcast_sequence_advantages(torch.tensor([2.0, -1.0]), torch.tensor([[0, 1, 1], [1, 0, 0]]))
    assert out.tolist() == [[0.0, 2.0, 2.0], [-1.0, 0.0, 0.0]]


def test_whiten_exact_masked_and_empty():
    x, m = torch.tensor([[1.0, 2.0, 1e6], [3.0, float("nan"), 0.0]]), torch.tensor([[1, 1, 0], [1, 0, 0]])
    # masked entries 1, 2, 3: mean 2, unbiased var 1
    torch.testing.assert_close(whiten(x, m), torch.tensor([[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))
    torch.testing.assert_close(whiten(x, m, shift_mean=False), torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]]))
    assert whiten(x, torch.zeros(2, 3)).tolist() == [[0.0] * 3] * 2
    assert whiten(torch.tensor([[5.0]]), torch.ones(1, 1)).tolist() == [[0.0]]   # one token: no NaN


def test_turn_rewards_to_tokens_places_rewards_on_last_sampled_token():
    m = torch.tensor([[0, 1, 1, 0, 1, 1], [0, 1, 0, 0, 0, 0]])
    out = turn_rewards_to_tokens([[0.0, 1.0], [0.5]], [[2, 5], [1]], (2, 6), mask=m)
    assert out.tolist() == [[0, 0, 0, 0, 0, 1.0], [0, 0.5, 0, 0, 0, 0]]   # outcome reward at the final turn
    assert out.dtype == torch.float32
    with pytest.raises(ValueError, match="not a sampled token"):
        turn_rewards_to_tokens([[1.0]], [[3]], (1, 6), mask=m[:1])
    with pytest.raises(ValueError, match="outside"):
        turn_rewards_to_tokens([[1.0]], [[6]], (1, 6))
    with pytest.raises(ValueError, match="turn end indices"):
        turn_rewards_to_tokens([[1.0, 0.0]], [[3]], (1, 6))
    with pytest.raises(ValueError, match="B=2"):
        turn_rewards_to_tokens([[1.0]], [[3]], (2, 6))


def test_masked_mean_std_exact_over_the_mask_only():
    x = torch.tensor([[1.0, 100.0, 3.0], [5.0, -7.0, 0.0]])
    m = torch.tensor([[1, 0, 1], [1, 0, 0]])                         # 1, 3, 5: mean 3, unbiased var 4
    assert masked_mean_std(x, m) == (3.0, 2.0)
    assert masked_mean_std(x, torch.tensor([[0, 0, 1], [0, 0, 0]])) == (3.0, 0.0)   # one entry: std 0
    assert masked_mean_std(x, torch.zeros(2, 3)) == (0.0, 0.0)


def test_group_reward_std_is_the_mean_unbiased_std_per_group():
    scores = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0])  # groups of 4: std 1/sqrt(3), then 0
    assert group_reward_std(scores, 4) == pytest.approx((1 / 3) ** 0.5 / 2, abs=1e-12)
    assert group_reward_std(torch.tensor([0.0, 2.0]), 2) == pytest.approx(2 ** 0.5, abs=1e-12)
