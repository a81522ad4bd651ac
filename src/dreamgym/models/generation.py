"""Batched text generation over HF models: the one entry point annotation, the synthetic env and the
fidelity audit call (the rollout loop adds log-probs on top). Prompts go in as token ids, sorted by
length into batches to limit padding, left-padded, and come back as the new token ids per prompt
(cut at the first end token) in the original order.

Choice mode (`generate_samples(..., choices=...)`): a prompt may come with candidate continuations (token
id sequences, each ending with the end token); decoding is then prefix-constrained to that set through a
token trie (HF's `prefix_allowed_tokens_fn`), so the sample is exactly one candidate. Its log-probs are
under the renormalised distribution over the ids allowed at each step (log_softmax over logits[allowed] / T),
and `Sample.allowed` keeps those id sets so training can score the same distribution (`rl.batch`).

Backends (`GenerationSettings.backend`): `engine` is `models.engine.KVEngine` (in-place KV cache, cache
reuse across the turns of a keyed sequence and across identical prompts, continuous batching; Llama-family
models), `hf` is HF `generate`, `auto` (default) picks the engine where the model supports it. Both give
the same tokens and log-probs (tests/test_engine.py). `keys` name the sequences a call continues (the
rollout loop passes episode indices), so the engine prefills only what each turn appended.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch

__all__ = ["GenerationSettings", "Sample", "ChoiceTrie", "generate_ids", "generate_samples", "release_keys",
           "stop_token_ids", "BACKENDS"]


@dataclass
class Sample:
    """One generated continuation exactly as sampled: `ids` include the end token when the model wrote
    one (`stopped`), `logprobs[i]` is log p(ids[i]) under the sampling distribution (logits / T; in choice
    mode renormalised over `allowed[i]`, the ids the trie allowed at that step; None = unconstrained)."""

    ids: list[int]
    logprobs: list[float]
    stopped: bool
    allowed: list[list[int]] | None = None


class ChoiceTrie:
    """Token trie over candidate id sequences: which ids may follow a prefix. Candidates end with the
    end token, so none is a prefix of another and a completed candidate allows nothing more."""

    def __init__(self, sequences: list[list[int]]):
        self.root: dict[int, dict] = {}
        self.depth = max((len(s) for s in sequences), default=0)
        for seq in sequences:
            node = self.root
            for t in seq:
                node = node.setdefault(t, {})

    def allowed(self, prefix: list[int]) -> list[int]:
        """Sorted ids that extend `prefix` towards a candidate ([] off the trie or past a candidate's end)."""
        node = self.root
        for t in prefix:
            node = node.get(t)
            if node is None:
                return []
        return sorted(node)


@dataclass
class GenerationSettings:
    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    batch_size: int = 8
    backend: str = "auto"
    """'auto' (the KV engine where the model supports it, else HF), 'engine' or 'hf'"""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend: got {self.backend!r}, expected one of {BACKENDS}")


BACKENDS = ("auto", "engine", "hf")


def stop_token_ids(tokenizer) -> list[int]:
    """eos plus the chat template's end-of-turn token when the tokenizer has one (e.g. <|im_end|>).
    Cached per tokenizer: `get_vocab()` builds a 49k-entry dict each call (~30 ms)."""
    cached = _STOP_IDS.get(tokenizer)
    if cached is not None:
        return list(cached)
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    vocab = tokenizer.get_vocab()
    ids.update(vocab[tok] for tok in ("<|im_end|>", "<|eot_id|>", "<|end|>") if tok in vocab)
    _STOP_IDS[tokenizer] = sorted(ids)
    return sorted(ids)


def generate_ids(model, tokenizer, prompts: list[list[int]], settings: GenerationSettings,
                 generator_seed: int | None = None) -> list[list[int]]:
    """New token ids for each prompt (end token excluded), in input order."""
    if _use_engine(model, settings):
        samples = _generate_engine(model, tokenizer, prompts, settings, generator_seed, None, None)
        return [s.ids[:-1] if s.stopped else s.ids for s in samples]
    samples = _generate(model, tokenizer, prompts, settings, generator_seed, with_logprobs=False)
    return [s.ids[:-1] if s.stopped else s.ids for s in samples]


def generate_samples(model, tokenizer, prompts: list[list[int]], settings: GenerationSettings,
                     generator_seed: int | None = None, choices: list[list[list[int]] | None] | None = None,
                     keys: list | None = None) -> list[Sample]:
    """Sampled continuations with their behaviour log-probs (end token kept when written). `choices[i]`
    (candidate id sequences, each ending with an end token) constrains prompt i to exactly one of them;
    None or [] leaves it free; a constrained prompt decodes at most its longest candidate. `keys[i]` (the
    engine backend) names the sequence prompt i extends, so its cached prefix is not recomputed; release
    them with `release_keys` when the sequences end."""
    if _use_engine(model, settings):
        return _generate_engine(model, tokenizer, prompts, settings, generator_seed, choices, keys)
    return _generate(model, tokenizer, prompts, settings, generator_seed, with_logprobs=True, choices=choices)


def release_keys(model, keys: list | None = None) -> None:
    """Let the engine reuse the cache rows of `keys` (all when None); a no-op on the HF backend."""
    from dreamgym.models.engine import bound_engine
    eng = bound_engine(model)
    if eng is not None:
        eng.release(keys)


# -- internals ---------------------------------------------------------------------------------
_STOP_IDS: "weakref.WeakKeyDictionary[object, list[int]]" = weakref.WeakKeyDictionary()


def _use_engine(model, settings: GenerationSettings) -> bool:
    from dreamgym.models.engine import engine_supports
    if settings.backend == "hf":
        return False
    if engine_supports(model):
        return True
    if settings.backend == "engine":
        raise ValueError(f"backend: 'engine' does not support model type "
                         f"{getattr(getattr(model, 'config', None), 'model_type', '?')!r}; use 'hf' or 'auto'")
    return False


def _generate_engine(model, tokenizer, prompts, settings, generator_seed, choices, keys) -> list[Sample]:
    from dreamgym.models.engine import engine_for
    if not prompts:
        return []
    if generator_seed is not None:
        torch.manual_seed(generator_seed)
    tries = [ChoiceTrie(c) if c else None for c in choices] if choices is not None else None
    outs = engine_for(model, tokenizer).generate(prompts, settings, stop_token_ids(tokenizer), keys=keys, tries=tries)
    return [Sample(ids=ids, logprobs=lps, stopped=stopped, allowed=allowed) for ids, lps, stopped, allowed in outs]


@torch.no_grad()
def _generate(model, tokenizer, prompts: list[list[int]], settings: GenerationSettings,
              generator_seed: int | None, with_logprobs: bool,
              choices: list[list[list[int]] | None] | None = None) -> list[Sample]:
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
    tries = [ChoiceTrie(c) if c else None for c in choices] if choices is not None else [None] * len(prompts)
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
            batch_tries = [tries[i] for i in idx]
            kwargs = dict(max_new_tokens=settings.max_new_tokens, do_sample=settings.do_sample,
                          pad_token_id=pad, eos_token_id=stops or None, return_dict_in_generate=True,
                          output_logits=with_logprobs)
            if any(batch_tries):  # constrained rows stop at their longest candidate, free ones at the setting
                free = [] if all(batch_tries) else [settings.max_new_tokens]
                kwargs.update(max_new_tokens=max([t.depth for t in batch_tries if t is not None] + free),
                              prefix_allowed_tokens_fn=_allowed_fn(batch_tries, width, pad, model.config.vocab_size))
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
                trie = batch_tries[row]
                if trie is None:
                    out[i] = Sample(ids=toks[:n], logprobs=lp[row, :n].tolist() if with_logprobs else [0.0] * n,
                                    stopped=cut is not None)
                    continue
                allowed = [trie.allowed(toks[:j]) for j in range(n)]
                out[i] = Sample(ids=toks[:n], logprobs=_renormalised_logprobs(logits[row, :n], toks[:n], allowed),
                                stopped=cut is not None, allowed=allowed)
    finally:
        model.train(was_training)
    return out  # type: ignore[return-value]


def _allowed_fn(tries: list[ChoiceTrie | None], width: int, pad: int, vocab: int):
    """HF `prefix_allowed_tokens_fn` for one left-padded batch: row b's trie walked by its new ids (every
    id for a row without candidates)."""
    everything = list(range(vocab))

    def fn(batch_id: int, sequence: torch.Tensor) -> list[int]:
        trie = tries[batch_id]
        if trie is None:
            return everything
        return trie.allowed(sequence[width:].tolist()) or [pad]  # finished rows only ever get padding

    return fn


def _renormalised_logprobs(logits: torch.Tensor, ids: list[int], allowed: list[list[int]]) -> list[float]:
    """log p(ids[j]) under softmax over logits[j, allowed[j]] (logits already divided by T); (n, V) in."""
    return [(logits[j, a].log_softmax(-1)[a.index(t)]).item() for j, (t, a) in enumerate(zip(ids, allowed))]
