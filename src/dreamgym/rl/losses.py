"""Losses for policy training: clipped policy gradient, value loss, KL to the reference, entropy.

The trainer calls these on each minibatch; each returns `(loss: scalar Tensor, stats: dict[str,
float])` and the trainer prefixes the stat names (`ppo/` or `grpo/`). Tensors are (B, T) over one
episode's token sequence; `mask` (B, T) is 1 on policy-sampled tokens only. Choices, stated once:

- Masking: masked positions are replaced by 0 *before* any arithmetic (`torch.where`, never `x * mask`),
  so garbage there (even NaN/inf) changes nothing and gets exactly zero gradient.
- Aggregation (`aggregate`, verl's agg_loss semantics) over the tensors passed in (one minibatch):
  "token-mean" = sum over all sampled tokens / their number (every token weighs the same; default);
  "seq-mean-token-sum" = mean over sequences of per-sequence sums (long answers weigh more);
  "seq-mean-token-mean" = mean over sequences of per-sequence means (GRPO paper: every episode weighs
  the same). Sequences without sampled tokens are left out; an empty mask gives 0, never NaN.
- Stats are token means over the mask whatever the aggregation.
- Policy-ratio KL for monitoring (`approx_kl`) is k3 of KL(old || new): (r - 1) - log r, r = pi/pi_old,
  >= 0. KL to the reference policy defaults to k3 too (see `kl_penalty` for k1, k2, low_var_kl).
- Log-ratios are clamped to [-20, 20] before exp (as verl) so broken inputs give large, finite values.
- Value loss is 0.5 * squared error (cleanrl, verl), PPO2-clipped around the old values if asked.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["AGGREGATIONS", "Aggregation", "KL_ESTIMATORS", "masked_sum", "masked_mean", "aggregate",
           "clipped_pg_loss", "value_loss", "kl_penalty", "entropy_from_logits", "explained_variance"]

Aggregation = Literal["token-mean", "seq-mean-token-sum", "seq-mean-token-mean"]
AGGREGATIONS: tuple[str, ...] = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean")
KL_ESTIMATORS: tuple[str, ...] = ("k1", "k2", "k3", "low_var_kl")


def masked_sum(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Sum of x over mask == 1 entries (all of them, or along `dim`); masked entries never leak."""
    xm = torch.where(mask.bool(), x, 0.0)
    return xm.sum() if dim is None else xm.sum(dim=dim)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of x over mask == 1 entries (all of them, or along `dim`); 0 where there are none."""
    count = mask.bool().sum() if dim is None else mask.bool().sum(dim=dim)
    return masked_sum(x, mask, dim) / count.clamp(min=1)


def aggregate(loss_mat: Tensor, mask: Tensor, mode: Aggregation = "token-mean") -> Tensor:
    """Per-token losses (B, T) -> scalar, by `mode` (module docstring); empty mask -> 0."""
    if mode == "token-mean":
        return masked_mean(loss_mat, mask)
    if mode not in AGGREGATIONS:
        raise ValueError(f"aggregation={mode!r}: expected one of {', '.join(AGGREGATIONS)}")
    per_seq = masked_sum(loss_mat, mask, dim=-1)                      # (B,)
    tokens = mask.bool().sum(dim=-1)                                  # (B,)
    if mode == "seq-mean-token-mean":
        per_seq = per_seq / tokens.clamp(min=1)
    return masked_mean(per_seq, tokens > 0)


def clipped_pg_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, clip_eps: float,
                    clip_eps_high: float | None = None, aggregation: Aggregation = "token-mean",
                    dual_clip_c: float | None = None) -> tuple[Tensor, dict[str, float]]:
    """PPO's clipped surrogate, as a loss to minimise; logp, old_logp, advantages, mask (B, T).

    Per token: max(-A r, -A clip(r, 1 - clip_eps, 1 + clip_eps_high)), r = exp(logp - old_logp);
    `clip_eps_high` (default clip_eps) > clip_eps is DAPO's "clip-higher". With `dual_clip_c` (> 1),
    tokens with A < 0 are also capped at -A * c (dual-clip PPO), so a huge ratio cannot blow up the loss.
    old_logp and advantages are constants (detached). Stats: clipfrac (share of tokens with r outside
    [1 - clip_eps, 1 + clip_eps_high]), dual_clipfrac (share of tokens capped by the dual clip),
    approx_kl (k3 of KL(old || new)), ratio_mean.
    """
    if dual_clip_c is not None and dual_clip_c <= 1.0:
        raise ValueError(f"dual_clip_c={dual_clip_c}: the dual-clip bound must be > 1")
    high = clip_eps if clip_eps_high is None else clip_eps_high
    m = mask.bool()
    adv = torch.where(m, advantages.detach(), 0.0)
    log_ratio = torch.where(m, logp - old_logp.detach(), 0.0).clamp(-20.0, 20.0)
    ratio = torch.exp(log_ratio)
    losses = torch.maximum(-adv * ratio, -adv * ratio.clamp(1.0 - clip_eps, 1.0 + high))
    dual = torch.zeros_like(m)
    if dual_clip_c is not None:
        dual = (adv < 0) & (losses > -adv * dual_clip_c)
        losses = torch.where(dual, -adv * dual_clip_c, losses)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean(((ratio < 1.0 - clip_eps) | (ratio > 1.0 + high)).float(), m).item(),
            "dual_clipfrac": masked_mean(dual.float(), m).item(),
            "approx_kl": masked_mean((ratio - 1.0) - log_ratio, m).item(),
            "ratio_mean": masked_mean(ratio, m).item(),
        }
    return aggregate(losses, m, aggregation), stats


def value_loss(values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip_range: float | None = None,
               aggregation: Aggregation = "token-mean") -> tuple[Tensor, dict[str, float]]:
    """Critic loss 0.5 * (V - R)^2; values, old_values, returns, mask (B, T).

    With `clip_range` (PPO2): 0.5 * max((V - R)^2, (V_clip - R)^2), V_clip = V_old + clip(V - V_old,
    -clip_range, clip_range). old_values and returns are constants (detached). Stats: value_clipfrac
    (share of tokens where the clipped term was the larger one; 0 without clip_range).
    """
    m = mask.bool()
    v = torch.where(m, values, 0.0)
    old = torch.where(m, old_values.detach(), 0.0)
    ret = torch.where(m, returns.detach(), 0.0)
    losses = (v - ret).pow(2)
    clipped = torch.zeros_like(m)
    if clip_range is not None:
        v_clip = old + (v - old).clamp(-clip_range, clip_range)
        losses_clip = (v_clip - ret).pow(2)
        clipped = losses_clip > losses
        losses = torch.maximum(losses, losses_clip)
    stats = {"value_clipfrac": masked_mean(clipped.float(), m).item()}
    return 0.5 * aggregate(losses, m, aggregation), stats


def kl_penalty(logp: Tensor, ref_logp: Tensor, mask: Tensor, estimator: str = "k3",
               aggregation: Aggregation = "token-mean") -> tuple[Tensor, dict[str, float]]:
    """KL(pi || pi_ref) estimated on tokens sampled from pi; logp, ref_logp, mask (B, T).

    With d = ref_logp - logp (log pi_ref / pi) per token (Schulman, "Approximating KL divergence"):
    - "k1": -d = logp - ref_logp. Unbiased, high variance, can be negative per token.
    - "k2": 0.5 * d^2. Biased (exact to second order), low variance, >= 0.
    - "k3": exp(d) - d - 1. Unbiased, low variance, >= 0 per token, 0 iff logp == ref_logp. Default
      (GRPO's choice).
    - "low_var_kl": k3 with d clamped to [-20, 20] and the result to <= 10 (verl's name); a few
      tokens far from the reference cannot dominate the batch.
    ref_logp is a constant (detached). Stats: kl (the aggregated value).
    """
    m = mask.bool()
    d = torch.where(m, ref_logp.detach() - logp, 0.0)
    if estimator == "k1":
        kl = -d
    elif estimator == "k2":
        kl = 0.5 * d.pow(2)
    elif estimator == "k3":
        kl = torch.exp(d) - d - 1.0
    elif estimator == "low_var_kl":
        d = d.clamp(-20.0, 20.0)
        kl = (torch.exp(d) - d - 1.0).clamp(max=10.0)
    else:
        raise ValueError(f"kl estimator {estimator!r}: expected one of {', '.join(KL_ESTIMATORS)}")
    loss = aggregate(kl, m, aggregation)
    return loss, {"kl": loss.item()}


def entropy_from_logits(logits: Tensor, mask: Tensor, aggregation: Aggregation = "token-mean",
                        chunk_size: int | None = None) -> tuple[Tensor, dict[str, float]]:
    """Policy entropy H = logsumexp(z) - sum softmax(z) * z per token; logits (B, T, V), mask (B, T).

    Computed in float32 on the sampled tokens only (logits at masked positions are never read, so
    they get exactly zero gradient). `chunk_size` splits the vocabulary into slices of that many
    logits (two passes: logsumexp, then the softmax-weighted sum) to bound the size of intermediates.
    Logits must be finite. Returns (aggregated entropy, {"entropy": the same as a float}); a trainer
    maximising entropy adds `-coef * entropy` to its loss.
    """
    m = mask.bool()
    rows = logits[m]                                                  # (n, V), sampled tokens only
    per_token = torch.zeros(m.shape, dtype=torch.float32, device=logits.device)
    per_token = per_token.masked_scatter(m, _entropy_rows(rows, chunk_size))
    loss = aggregate(per_token, m, aggregation)
    return loss, {"entropy": loss.item()}


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> float:
    """1 - Var(returns - values) / Var(returns) over mask == 1 entries, as a float (no gradient).

    1 = the critic predicts returns exactly, 0 = no better than a constant, < 0 = worse. Undefined
    cases (fewer than 2 tokens, or constant returns) give 0.0 rather than NaN.
    """
    m = mask.bool()
    if m.sum() < 2:
        return 0.0
    with torch.no_grad():
        r, v = returns[m].double(), values[m].double()
        var_r = r.var(unbiased=False)
        if var_r == 0:
            return 0.0
        return (1.0 - (r - v).var(unbiased=False) / var_r).item()


# -- internals ---------------------------------------------------------------------------------------
def _entropy_rows(z: Tensor, chunk_size: int | None) -> Tensor:
    """Entropy of each row of z (n, V) in float32, optionally over vocabulary chunks."""
    if chunk_size is None or chunk_size >= z.shape[-1]:
        logp = F.log_softmax(z.float(), dim=-1)
        return -(logp.exp() * logp).sum(dim=-1)
    chunks = z.split(chunk_size, dim=-1)
    lse = torch.logsumexp(torch.stack([c.float().logsumexp(dim=-1) for c in chunks], dim=-1), dim=-1)
    weighted = sum(((c.float() - lse[:, None]).exp() * c.float()).sum(dim=-1) for c in chunks)
    return lse - weighted
