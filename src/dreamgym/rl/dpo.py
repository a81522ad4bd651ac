"""DPO (Rafailov et al., 2023), the paper's offline baseline: pure functions over per-sequence log-probs.

`sequence_logps` sums per-token log-probs (from `rl.batch.policy_forward`) over the response mask: one
log pi(a | s) per row. `dpo_loss` takes the policy's and the reference's sums for the chosen and rejected
action of each pair; the reference is the policy before DPO (the base with the adapter disabled, or the
warm-start adapter), its sums computed once before training.

    z = beta * ((pi_c - ref_c) - (pi_r - ref_r))
    loss = mean(-(1 - eps) * log sigmoid(z) - eps * log sigmoid(-z))      (eps = label_smoothing: cDPO)

Stats: implicit rewards beta * (pi - ref) of chosen/rejected, their margin, and the share of pairs whose
margin is positive (reward accuracy).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["sequence_logps", "dpo_loss"]


def sequence_logps(token_logps: Tensor, mask: Tensor) -> Tensor:
    """(B, T) per-token log-probs and 0/1 mask -> (B,) sums over masked positions (masked-out values,
    even nan-free garbage, never leak: they are multiplied by 0 via `where`)."""
    return torch.where(mask.bool(), token_logps, torch.zeros_like(token_logps)).sum(-1)


def dpo_loss(policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor,
             beta: float, label_smoothing: float = 0.0) -> tuple[Tensor, dict[str, float]]:
    """Mean DPO loss over N pairs (all inputs (N,) sequence log-probs) and its stats."""
    chosen_reward = beta * (policy_chosen - ref_chosen)
    rejected_reward = beta * (policy_rejected - ref_rejected)
    z = chosen_reward - rejected_reward
    losses = -(1.0 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)
    loss = losses.mean()
    stats = {"chosen_reward": chosen_reward.mean().item(), "rejected_reward": rejected_reward.mean().item(),
             "reward_margin": z.mean().item(), "reward_accuracy": (z > 0).float().mean().item()}
    return loss, stats
