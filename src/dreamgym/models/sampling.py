"""Next-token choice for the KV engine: one softmax per row over logits / T, optionally restricted to an
allowed id set (choice mode: the distribution is renormalised over it, as training's `policy_forward`
scores it), then greedy argmax or a multinomial draw (with nucleus filtering when top_p < 1). The
returned log-prob is the behaviour log-prob of the chosen id under that (unfiltered by top_p) distribution."""

from __future__ import annotations

import torch

__all__ = ["pick_tokens", "top_p_filter"]


def pick_tokens(logits: torch.Tensor, allowed: list[list[int] | None], temperature: float, do_sample: bool,
                top_p: float = 1.0, generator: torch.Generator | None = None) -> tuple[list[int], list[float]]:
    """(ids, log-probs) for logits (b, V); `allowed[i]` limits row i to those ids (None = any id)."""
    logits = logits.float() / temperature
    constrained = [i for i, a in enumerate(allowed) if a is not None]
    if constrained:
        mask = torch.zeros_like(logits, dtype=torch.bool)
        mask[constrained] = True  # constrained rows: everything off but their allowed ids
        for i in constrained:
            mask[i, allowed[i]] = False
        logits = logits.masked_fill(mask, float("-inf"))
    logp = torch.log_softmax(logits, dim=-1)
    if do_sample:
        probs = logp.exp()
        if top_p < 1.0:
            probs = top_p_filter(probs, top_p)
        picked = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    else:
        picked = logp.argmax(-1)
    return picked.tolist(), logp.gather(-1, picked.unsqueeze(-1)).squeeze(-1).tolist()


def top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero every id outside the smallest set whose probability reaches top_p (unnormalised; multinomial
    renormalises)."""
    sorted_p, idx = probs.sort(dim=-1, descending=True)
    keep = sorted_p.cumsum(-1) - sorted_p < top_p
    return torch.zeros_like(probs).scatter(-1, idx, sorted_p * keep)
