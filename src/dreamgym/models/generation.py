"""Batched text generation over HF models: the one entry point annotation, the synthetic env and the
fidelity audit call (the rollout loop adds log-probs on top). Prompts go in as token ids, sorted by
length into batches to limit padding, left-padded, and come back as the new token ids per prompt
(cut at the first end token) in the original order.

This is the plain HF `generate` path; issue 8's faster backend will sit behind the same function.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["GenerationSettings", "Sample", "generate_ids", "generate_samples", "stop_token_ids"]


@dataclass
class Sample:
    """One generated continuation exactly as sampled: `ids` include the end token when the model wrote
    one (`stopped`), `logprobs[i]` is log p(ids[i]) under the sampling distribution (logits / T)."""

    ids: list[int]
    logprobs: list[float]
    stopped: bool


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


def generate_ids(model, tokenizer, prompts: list[list[int]], settings: GenerationSettings,
                 generator_seed: int | None = None) -> list[list[int]]:
    """New token ids for each prompt (end token excluded), in input order."""
    samples = _generate(model, tokenizer, prompts, settings, generator_seed, with_logprobs=False)
    return [s.ids[:-1] if s.stopped else s.ids for s in samples]


def generate_samples(model, tokenizer, prompts: list[list[int]], settings: GenerationSettings,
                     generator_seed: int | None = None) -> list[Sample]:
    """Sampled continuations with their behaviour log-probs (end token kept when written)."""
    return _generate(model, tokenizer, prompts, settings, generator_seed, with_logprobs=True)


# -- internals ---------------------------------------------------------------------------------

@torch.no_grad()
def _generate(model, tokenizer, prompts: list[list[int]], settings: GenerationSettings,
              generator_seed: int | None, with_logprobs: bool) -> list[Sample]:
    if not prompts:
        return []
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stops = stop_token_ids(tokenizer)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[Sample | None] = [None] * len(prompts)
    was_training = model.training
    model.eval()
    if generator_seed is not None:
        torch.manual_seed(generator_seed)
    temperature = settings.temperature if settings.do_sample else 1.0
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
                          pad_token_id=pad, eos_token_id=stops or None, return_dict_in_generate=True,
                          output_logits=with_logprobs)
            if settings.do_sample:
                kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=None)
            else:
                kwargs.update(temperature=None, top_p=None, top_k=None)
            res = model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device), **kwargs)
            new = res.sequences[:, width:]
            if with_logprobs:
                logits = torch.stack(res.logits, dim=1).float() / temperature  # (b, n, V)
                lp = torch.log_softmax(logits, dim=-1).gather(-1, new.unsqueeze(-1)).squeeze(-1)
            for row, i in enumerate(idx):
                toks = new[row].tolist()
                cut = next((j for j, t in enumerate(toks) if t in stops), None)
                n = len(toks) if cut is None else cut + 1
                out[i] = Sample(ids=toks[:n], logprobs=lp[row, :n].tolist() if with_logprobs else [0.0] * n,
                                stopped=cut is not None)
    finally:
        model.train(was_training)
    return out  # type: ignore[return-value]
