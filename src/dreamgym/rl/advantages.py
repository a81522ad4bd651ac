"""Advantages: per-turn rewards -> per-token advantages for PPO (GAE with a critic) and GRPO (groups).

The trainer calls these once per iteration on a batch of rollouts, under no gradient. Layout: every
tensor is (B, T) over one episode's token sequence (prompt, sampled action tokens, observation tokens
appended in order); `mask` (B, T) is 1 on policy-sampled tokens (the response_mask), 0 on prompt,
observation and padding tokens. Choices, stated once:

- Rewards sit on the last sampled token of each turn (`turn_rewards_to_tokens`); DreamGym's outcome
  reward (1 on success, else 0) sits on the last sampled token of the final turn.
- GAE runs over policy tokens only: mask == 0 positions are transparent (their rewards and values
  are ignored, they neither bootstrap nor get an advantage), so gamma discounts per sampled token and
  an observation between two turns costs nothing.
- GRPO: scores (N,) come group-contiguous (task 0's G rollouts, then task 1's, ...); advantages are
  (score - group mean) / (group std + eps) with the *unbiased* std (Bessel, n - 1), as GRPO and verl;
  `normalize_std=False` gives Dr. GRPO's mean-only centring. A group with identical scores has no
  signal: its advantages are exactly 0 and it is flagged, so the trainer can filter (or resample) it
  and log the share as `grpo/zero_var_groups`.
- `whiten` (PPO advantage normalisation) also uses the unbiased variance over the masked entries.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

__all__ = ["turn_rewards_to_tokens", "gae", "group_advantages", "broadcast_sequence_advantages", "whiten",
           "filter_zero_variance_groups", "masked_mean_std", "group_reward_std"]


def turn_rewards_to_tokens(turn_rewards: list[list[float]], turn_end_index: list[list[int]],
                           shape: Sequence[int], *, mask: Tensor | None = None,
                           dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
    """Per-turn rewards -> a (B, T) reward tensor, zero except on each turn's last sampled token.

    `turn_rewards[b][k]` is the reward of episode b's turn k (outcome reward: on the final turn, 0
    before it); `turn_end_index[b][k]` is the position in the (B, T) layout of that turn's last
    sampled token. Rewards landing on one position add up. With `mask` given, every index must be a
    sampled token (mask == 1): a reward on a masked position would be silently ignored by `gae`.
    """
    B, T = shape
    if len(turn_rewards) != B or len(turn_end_index) != B:
        raise ValueError(f"turn_rewards ({len(turn_rewards)}) and turn_end_index ({len(turn_end_index)}) "
                         f"must have one entry per episode (B={B})")
    out = torch.zeros(B, T, dtype=dtype, device=device)
    for b, (rewards, ends) in enumerate(zip(turn_rewards, turn_end_index)):
        if len(rewards) != len(ends):
            raise ValueError(f"episode {b}: {len(rewards)} turn rewards but {len(ends)} turn end indices")
        for k, (r, t) in enumerate(zip(rewards, ends)):
            if not 0 <= t < T:
                raise ValueError(f"episode {b} turn {k}: end index {t} outside [0, T={T})")
            if mask is not None and not mask[b, t]:
                raise ValueError(f"episode {b} turn {k}: end index {t} is not a sampled token (mask == 0)")
            out[b, t] += r
    return out


@torch.no_grad()
def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over policy tokens only; all inputs (B, T).

    mask == 0 positions (prompt, observation, padding) neither bootstrap nor get an advantage: the
    recursion A_t = delta_t + gamma * lam * A_next, delta_t = r_t + gamma * V_next - V_t runs over the
    sampled tokens in order, V_next being the value of the next *sampled* token (0 after the last).
    Returns (advantages, returns = advantages + values), both (B, T), 0 where mask == 0, no gradient.
    """
    keep_all = mask.bool()
    adv = torch.zeros_like(rewards)
    next_value = running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        keep = keep_all[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = torch.where(keep, delta + gamma * lam * running, running)
        next_value = torch.where(keep, values[:, t], next_value)
        adv[:, t] = torch.where(keep, running, 0.0)
    return adv, torch.where(keep_all, adv + values, 0.0)


@torch.no_grad()
def group_advantages(scores: Tensor, group_size: int, eps: float = 1e-6,
                     normalize_std: bool = True) -> tuple[Tensor, Tensor]:
    """GRPO advantages: each score against the other rollouts of its task.

    scores (N,), group-contiguous, N divisible by group_size (>= 2). Returns (adv (N,), zero_var
    (N // group_size,) bool). adv = (s - group mean) / (group std + eps), std unbiased (n - 1);
    without `normalize_std`, adv = s - group mean. zero_var marks groups whose scores are all equal;
    their advantages are exactly 0.
    """
    if group_size < 2:
        raise ValueError(f"group_size={group_size}: GRPO needs at least 2 rollouts per group")
    n = scores.numel()
    if scores.dim() != 1 or n % group_size:
        raise ValueError(f"group_advantages: {tuple(scores.shape)} scores do not split into groups of "
                         f"group_size={group_size}; expect (N,) with N a multiple of {group_size}")
    groups = scores.reshape(-1, group_size)
    zero_var = groups.amax(dim=1) == groups.amin(dim=1)
    adv = groups - groups.mean(dim=1, keepdim=True)
    if normalize_std:
        adv = adv / (groups.std(dim=1, unbiased=True, keepdim=True) + eps)
    adv = torch.where(zero_var[:, None], 0.0, adv)
    return adv.reshape(n), zero_var


def broadcast_sequence_advantages(adv: Tensor, mask: Tensor) -> Tensor:
    """One advantage per sequence, adv (B,), onto its sampled tokens: (B, T), 0 where mask == 0."""
    return torch.where(mask.bool(), adv[:, None].to(torch.promote_types(adv.dtype, torch.float32)), 0.0)


def whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """Masked whitening of x (B, T): (x - mean) / sqrt(var + eps) over the mask == 1 entries.

    Unbiased variance (n - 1; 0 when fewer than 2 entries). `shift_mean=False` adds the mean back
    (scale only). Masked positions come back as 0; an empty mask gives all zeros, never NaN.
    """
    m = mask.bool()
    xm = torch.where(m, x, 0.0)
    n = m.sum()
    mean = xm.sum() / n.clamp(min=1)
    centred = torch.where(m, x - mean, 0.0)
    var = centred.pow(2).sum() / (n - 1).clamp(min=1)
    out = centred * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return torch.where(m, out, 0.0)


def filter_zero_variance_groups(zero_var: Tensor, group_size: int) -> tuple[Tensor, float]:
    """Which rollouts to keep: zero_var (G,) bool -> (keep (G * group_size,) bool, zero-var share).

    keep is False on every rollout of a zero-variance group (no learning signal); the share of such
    groups (0.0 for no groups) is what the trainer logs as `grpo/zero_var_groups`.
    """
    zero_var = zero_var.bool()
    share = zero_var.float().mean().item() if zero_var.numel() else 0.0
    return (~zero_var).repeat_interleave(group_size), share


def masked_mean_std(x: Tensor, mask: Tensor) -> tuple[float, float]:
    """Mean and unbiased std (n - 1, as `whiten`; 0 with fewer than 2 entries) of x over mask == 1:
    the `ppo/advantage_mean` / `ppo/advantage_std` statistics (before whitening). Empty mask: (0, 0)."""
    m = mask.bool()
    n = int(m.sum())
    if n == 0:
        return 0.0, 0.0
    vals = x[m].double()
    return float(vals.mean()), (float(vals.std(unbiased=True)) if n > 1 else 0.0)


def group_reward_std(scores: Tensor, group_size: int) -> float:
    """Mean over task groups of the within-group unbiased std of the scores (the spread that
    `group_advantages` divides by): `grpo/group_reward_std`. scores (N,), group-contiguous."""
    return float(scores.double().reshape(-1, group_size).std(dim=1, unbiased=True).mean())
