"""Batched text generation over HF models: the one entry point annotation, the synthetic env and the
fidelity audit call (the rollout loop adds log-probs on top). Prompts go in as token ids, sorted by
length into batches to limit padding, left-padded, and come back as the new token ids per prompt
(cut at the first end token) in the original order.

This is the plain HF `generate` path; issue 8's faster backend will sit behind the same function.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["GenerationSettings", "generate_ids", "stop_token_ids"]


@dataclass
class GenerationSettings:
    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    batch_size: int = 8


def stop_token_ids(tokenizer) -> list[int]:
    """eos plus the chat template's end-of-turn token when the tokenizer has one (e.g. <|im_end|>)."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    for tok in ("<|im_end|>", "<|eot_id|>", "<|end|>"):
        tid = tokenizer.convert_tokens_to_ids(tok) if tok in tokenizer.get_vocab() else None
        if tid is not None:
            ids.add(tid)
    return sorted(ids)


@torch.no_grad()
def generate_ids(model, tokenizer, prompts: list[list[int]], settings: GenerationSettings,
                 generator_seed: int | None = None) -> list[list[int]]:
    """New token ids for each prompt (end token excluded), in input order."""
    if not prompts:
        return []
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stops = stop_token_ids(tokenizer)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[list[int]] = [[] for _ in prompts]
    was_training = model.training
    model.eval()
    if generator_seed is not None:
        torch.manual_seed(generator_seed)
    try:
        for start in range(0, len(order), settings.batch_size):
            idx = order[start:start + settings.batch_size]
            width = max(len(prompts[i]) for i in idx)
            input_ids = torch.full((len(idx), width), pad, dtype=torch.long)
            attention = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                ids = prompts[i]
                input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
                attention[row, width - len(ids):] = 1
            kwargs = dict(max_new_tokens=settings.max_new_tokens, do_sample=settings.do_sample,
                          pad_token_id=pad, eos_token_id=stops or None)
            if settings.do_sample:
                kwargs.update(temperature=settings.temperature, top_p=settings.top_p)
            else:
                kwargs.update(temperature=None, top_p=None, top_k=None)
            seqs = model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device), **kwargs)
            for row, i in enumerate(idx):
                new = seqs[row, width:].tolist()
                cut = next((j for j, t in enumerate(new) if t in stops), len(new))
                out[i] = new[:cut]
    finally:
        model.train(was_training)
    return out
