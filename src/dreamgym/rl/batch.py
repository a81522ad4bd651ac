"""One iteration's rollouts as training tensors, plus the policy forward pass that scores them.

`RolloutBatch.from_episodes` right-pads the episodes' token traces into (B, T) tensors: `input_ids`,
`attention_mask`, `response_mask` (1 on sampled action tokens only), `token_rewards` (each turn's
reward on its last sampled token), `scores` (episode outcome reward, what GRPO normalises), `group`
(which task group a row belongs to) and `allowed_ids` (B, T, K): the ids choice mode allowed at each
sampled position, -1 padded (K = 0 when nothing was constrained). `policy_forward` runs the transformer
body once and applies the LM head (and the value head) only at response positions, so a 49k-vocab logit
tensor is never built for prompt or observation tokens. It scores the distribution the rollout sampled
from: logits / temperature, renormalised over the allowed set where a position has one (a forced single
choice: log-prob exactly 0, entropy 0, no gradient).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import Tensor

from dreamgym.rl.advantages import turn_rewards_to_tokens
from dreamgym.rl.rollout import Episode

__all__ = ["RolloutBatch", "policy_forward", "lm_body_and_head", "micro_batches", "micro_batch_weights"]


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
    allowed_ids: Tensor
    """(B, T, K) ids allowed at each choice-mode sampled position, -1 padding; all -1 = unconstrained"""
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
        return cls(ids, attn, mask, logp, rewards, scores, torch.tensor(group), policy_version,
                   _allowed_tensor([e.trace.allowed for e in episodes], width), episodes, dict(metrics or {}))

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, idx: Tensor) -> "RolloutBatch":
        return RolloutBatch(self.input_ids[idx], self.attention_mask[idx], self.response_mask[idx],
                            self.rollout_logprobs[idx], self.token_rewards[idx], self.scores[idx], self.group[idx],
                            self.policy_version, self.allowed_ids[idx], [self.episodes[i] for i in idx.tolist()],
                            self.metrics)

    def minibatch_indices(self, size: int, generator: torch.Generator) -> Iterator[Tensor]:
        perm = torch.randperm(len(self), generator=generator)
        for start in range(0, len(self), size):
            yield perm[start:start + size]


def micro_batches(rows: Tensor, lengths: Tensor, max_tokens: int) -> list[Tensor]:
    """Split a minibatch's `rows` (their unpadded `lengths`) into micro-batches for gradient accumulation: rows
    sorted longest first, each micro-batch as many as fit `max_tokens` padded tokens (rows x its longest, at
    least one row); 0 = one micro-batch. Activation memory grows with the tokens of one forward pass (~2.8 MB a
    token for SmolLM2-135M + LoRA in float32 on CPU: 4 episodes of 2,048 tokens need ~23 GB), so this bounds
    the memory of an update whatever the episode lengths, without changing its gradient (micro_batch_weights)."""
    if max_tokens <= 0 or len(rows) == 0:
        return [rows] if len(rows) else []
    lens = lengths.tolist()  # one device sync, not one per row
    out: list[list[int]] = []
    longest = 0
    for i in sorted(range(len(lens)), key=lambda j: -lens[j]):  # longest first, ties in row order
        n = int(lens[i])
        if out and max(longest, n) * (len(out[-1]) + 1) <= max_tokens:
            out[-1].append(i)
            longest = max(longest, n)
        else:
            out.append([i])
            longest = n
    return [rows[torch.tensor(part)] for part in out]


def micro_batch_weights(response_mask: Tensor, parts: list[Tensor], aggregation: str) -> list[tuple[float, float]]:
    """(loss weight, token weight) of each micro-batch: the minibatch's loss is the weighted sum of the
    micro-batches' losses. Token-mean terms weigh a part by its share of the minibatch's sampled tokens;
    seq-mean aggregations weigh it by its share of the sequences that have sampled tokens (rl/losses.py)."""
    tokens = [float(response_mask[p].bool().sum()) for p in parts]
    seqs = [float((response_mask[p].bool().sum(-1) > 0).sum()) for p in parts]
    tok_total, seq_total = max(sum(tokens), 1.0), max(sum(seqs), 1.0)
    per_tok = [t / tok_total for t in tokens]
    per_loss = per_tok if aggregation == "token-mean" else [s / seq_total for s in seqs]
    return list(zip(per_loss, per_tok))


def lm_body_and_head(model) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(transformer body returning hidden states, LM head) of a causal LM, peft-wrapped or not. LoRA
    layers live inside the body's modules, so calling the body uses (or, under disable_adapter, skips) them."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder() if hasattr(base, "get_decoder") else base.model, base.get_output_embeddings()


def policy_forward(model, input_ids: Tensor, attention_mask: Tensor, response_mask: Tensor,
                   value_head: torch.nn.Module | None = None, with_entropy: bool = False,
                   allowed_ids: Tensor | None = None, temperature: float = 1.0
                   ) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Log-probs of each token under the model (B, T; position t scored from t-1), entropies and values
    at response positions; zeros elsewhere. Scored like the rollout sampled: softmax(logits / temperature),
    and where `allowed_ids` (B, T, K; -1 padded) gives a position an allowed set, renormalised over it."""
    body, head = lm_body_and_head(model)
    hidden = body(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
    resp = response_mask.bool().clone()
    resp[:, 0] = False
    b_idx, t_idx = resp.nonzero(as_tuple=True)
    h = hidden[b_idx, t_idx - 1]  # the state that predicts token t
    logits = head(h).float()  # (N, V); divided by the temperature after picking rows/columns
    targets = input_ids[b_idx, t_idx]
    allowed = allowed_ids[b_idx, t_idx] if allowed_ids is not None and allowed_ids.shape[-1] > 0 else None
    choice = allowed[:, 0] >= 0 if allowed is not None else torch.zeros_like(targets, dtype=torch.bool)
    tok_logp, tok_ent = logits.new_zeros(len(targets)), logits.new_zeros(len(targets))
    free = ~choice
    if free.any():  # full-vocabulary softmax
        lp = torch.log_softmax(logits[free] / temperature, dim=-1)
        tok_logp[free] = lp.gather(-1, targets[free].unsqueeze(-1)).squeeze(-1)
        if with_entropy:
            tok_ent[free] = -(lp.exp() * lp).sum(-1)
    if choice.any():  # softmax over the allowed ids only: (N, K) instead of (N, V)
        lp, hit, valid = _renormalised(logits, allowed, targets, choice, temperature)
        tok_logp[choice] = lp.masked_fill(~hit, 0.0).sum(-1)
        if with_entropy:
            tok_ent[choice] = -(lp.exp() * lp.masked_fill(~valid, 0.0)).sum(-1)  # 0 * -inf would be nan
    logp = torch.zeros(input_ids.shape, dtype=torch.float, device=input_ids.device)
    logp[b_idx, t_idx] = tok_logp
    entropy = values = None
    if with_entropy:
        entropy = torch.zeros_like(logp)
        entropy[b_idx, t_idx] = tok_ent
    if value_head is not None:
        values = torch.zeros_like(logp)
        values[b_idx, t_idx] = value_head(h.float()).squeeze(-1)
    return logp, entropy, values


# -- internals ---------------------------------------------------------------------------------
def _allowed_tensor(allowed: list[list[list[int] | None]], width: int) -> Tensor:
    """Per-episode, per-position allowed sets -> (B, width, K) long, -1 padded (K = largest set, maybe 0)."""
    k = max((len(a) for rows in allowed for a in rows if a is not None), default=0)
    out = torch.full((len(allowed), width, k), -1, dtype=torch.long)
    for i, rows in enumerate(allowed):
        for t, a in enumerate(rows):
            if a is not None:
                out[i, t, : len(a)] = torch.tensor(a, dtype=torch.long)
    return out


def _renormalised(logits: Tensor, allowed: Tensor, targets: Tensor, rows: Tensor, temperature: float
                  ) -> tuple[Tensor, Tensor, Tensor]:
    """(N, V) logits, (N, K) allowed ids (-1 padded), (N,) targets, (N,) bool rows to score -> for those rows:
    log-softmax of logits / T over the allowed ids (-inf on padding), where each target sits, which slots
    are real ids; all (n_rows, K)."""
    allowed, targets = allowed[rows], targets[rows]
    valid = allowed >= 0
    sel = logits[rows.nonzero(as_tuple=True)[0].unsqueeze(-1), allowed.clamp(min=0)] / temperature
    lp = torch.log_softmax(sel.masked_fill(~valid, float("-inf")), dim=-1)
    hit = (allowed == targets.unsqueeze(-1)) & valid
    if not bool(hit.any(-1).all()):
        raise ValueError("policy_forward: a sampled token is not in its allowed set (trace and batch disagree)")
    return lp, hit, valid
