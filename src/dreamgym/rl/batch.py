"""One iteration's rollouts as training tensors, plus the policy forward pass that scores them.

`RolloutBatch.from_episodes` right-pads the episodes' token traces into (B, T) tensors: `input_ids`,
`attention_mask`, `response_mask` (1 on sampled action tokens only), `token_rewards` (each turn's
reward on its last sampled token), `scores` (episode outcome reward, what GRPO normalises) and `group`
(which task group a row belongs to). `policy_forward` runs the transformer body once and applies the
LM head (and the value head) only at response positions, so a 49k-vocab logit tensor is never built
for prompt or observation tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import Tensor

from dreamgym.rl.advantages import turn_rewards_to_tokens
from dreamgym.rl.rollout import Episode

__all__ = ["RolloutBatch", "policy_forward", "lm_body_and_head"]


@dataclass
class RolloutBatch:
    input_ids: Tensor
    attention_mask: Tensor
    response_mask: Tensor
    rollout_logprobs: Tensor
    token_rewards: Tensor
    scores: Tensor
    group: Tensor
    policy_version: int
    episodes: list[Episode] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_episodes(cls, episodes: list[Episode], group: list[int], pad_id: int, policy_version: int,
                      metrics: dict[str, float] | None = None) -> "RolloutBatch":
        width = max(len(e.trace.ids) for e in episodes)
        b = len(episodes)
        ids = torch.full((b, width), pad_id, dtype=torch.long)
        attn = torch.zeros((b, width), dtype=torch.long)
        mask = torch.zeros((b, width))
        logp = torch.zeros((b, width))
        for i, e in enumerate(episodes):
            n = len(e.trace.ids)
            ids[i, :n] = torch.tensor(e.trace.ids)
            attn[i, :n] = 1
            mask[i, :n] = torch.tensor(e.trace.mask, dtype=torch.float)
            logp[i, :n] = torch.tensor(e.trace.logprobs)
        rewards = turn_rewards_to_tokens([e.turn_rewards for e in episodes], [e.turn_ends for e in episodes],
                                         (b, width), mask=mask)
        scores = torch.tensor([e.outcome_reward for e in episodes], dtype=torch.float)
        return cls(ids, attn, mask, logp, rewards, scores, torch.tensor(group), policy_version, episodes,
                   dict(metrics or {}))

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, idx: Tensor) -> "RolloutBatch":
        return RolloutBatch(self.input_ids[idx], self.attention_mask[idx], self.response_mask[idx],
                            self.rollout_logprobs[idx], self.token_rewards[idx], self.scores[idx], self.group[idx],
                            self.policy_version, [self.episodes[i] for i in idx.tolist()], self.metrics)

    def minibatch_indices(self, size: int, generator: torch.Generator) -> Iterator[Tensor]:
        perm = torch.randperm(len(self), generator=generator)
        for start in range(0, len(self), size):
            yield perm[start:start + size]


def lm_body_and_head(model) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(transformer body returning hidden states, LM head) of a causal LM, peft-wrapped or not. LoRA
    layers live inside the body's modules, so calling the body uses (or, under disable_adapter, skips) them."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder() if hasattr(base, "get_decoder") else base.model, base.get_output_embeddings()


def policy_forward(model, input_ids: Tensor, attention_mask: Tensor, response_mask: Tensor,
                   value_head: torch.nn.Module | None = None, with_entropy: bool = False
                   ) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Log-probs of each token under the model (B, T; position t scored from t-1), entropies and values
    at response positions; zeros elsewhere."""
    body, head = lm_body_and_head(model)
    hidden = body(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
    resp = response_mask.bool().clone()
    resp[:, 0] = False
    b_idx, t_idx = resp.nonzero(as_tuple=True)
    h = hidden[b_idx, t_idx - 1]  # the state that predicts token t
    logits = head(h).float()
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = torch.zeros(input_ids.shape, dtype=torch.float, device=input_ids.device)
    logp[b_idx, t_idx] = logp_all.gather(-1, input_ids[b_idx, t_idx].unsqueeze(-1)).squeeze(-1)
    entropy = values = None
    if with_entropy:
        entropy = torch.zeros_like(logp)
        entropy[b_idx, t_idx] = -(logp_all.exp() * logp_all).sum(-1)
    if value_head is not None:
        values = torch.zeros_like(logp)
        values[b_idx, t_idx] = value_head(h.float()).squeeze(-1)
    return logp, entropy, values
