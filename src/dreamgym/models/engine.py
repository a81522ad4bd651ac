"""KV-cache generation engine: the fast backend behind `models.generation` for Llama-family decoders
(Llama, SmolLM2, Qwen2, Qwen3, Mistral without sliding window); any other model falls back to HF
`generate`.

Why it is faster than HF `generate` on the workloads that matter here (multi-turn GRPO rollouts):
- **In-place KV cache**: one pre-allocated (layers, slots, kv_heads, capacity, head_dim) tensor pair;
  each decode step writes one position per row (`index_put_`), nothing is concatenated or copied.
- **Multi-turn reuse**: a request may carry a key (the rollout loop uses the episode index). The key's
  slot keeps the ids already in its cache; the next turn's prompt extends them, so only the new tokens
  (template glue + observation) are prefilled. Any common prefix is reusable (a position's K/V depends
  only on the ids before it).
- **Shared prefixes**: identical prompts in one call (a GRPO group's first turn) are prefilled once and
  the K/V copied into the other rows.
- **Early stop + continuous batching**: the decode batch is always the contiguous rows [0, a) of the
  cache; a finished row is swapped behind them and a waiting request is prefilled into the freed place,
  so at most `batch_size` rows decode and none of them is finished.
- **Cheap heads**: the LM head runs only at the one position per row that is sampled; sampling uses
  one softmax over the logits (`torch.multinomial`), or a masked one in choice mode.
- **CUDA graphs** (GPU only): the decode step for a padded row count is captured once per call and
  replayed, removing per-kernel launch overhead. Captured graphs are dropped at the end of each call,
  so a toggled adapter or a changed model is always seen.

The LoRA adapter is whatever peft has active in the model's modules (no merge, no copy); inside
`model.disable_adapter()` the engine generates with the base. Token ids and log-probs match HF
`generate` (greedy: the same tokens; log-probs within float tolerance, see tests/test_engine.py).
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Hashable

import torch

from dreamgym.models.sampling import pick_tokens
from dreamgym.models.decoder import SUPPORTED_MODEL_TYPES, core_model, decoder_forward, grouped_attention, supports

log = logging.getLogger(__name__)

__all__ = ["KVEngine", "engine_for", "engine_supports"]

engine_supports = supports
"""True for decoders the engine runs natively (else callers use HF `generate`)"""


_ENGINE_ATTR = "_dreamgym_kv_engine"


def engine_for(model: Any, tokenizer: Any) -> "KVEngine":
    """The engine bound to `model` (one per model object, so its cache allocation is reused). It lives on the
    model itself: model and engine form one cycle the garbage collector frees together. (A registry keyed
    weakly by model leaks: the engine's own references keep every model and its KV cache alive.)"""
    eng = bound_engine(model)
    if eng is None:
        eng = KVEngine(model, tokenizer)
        object.__setattr__(model, _ENGINE_ATTR, eng)  # a plain attribute, not a registered submodule
    return eng


def bound_engine(model: Any) -> "KVEngine | None":
    """The engine `engine_for` bound to `model`, if any."""
    return model.__dict__.get(_ENGINE_ATTR)


def unbind_engine(model: Any) -> None:
    """Drop `model`'s engine (and its KV cache) now."""
    model.__dict__.pop(_ENGINE_ATTR, None)


@dataclass
class _PaddedStep:
    """One padded decode step's static tensors (a CUDA graph's inputs and outputs) and how to run it."""

    ids: torch.Tensor  # (width,) ids fed
    active: torch.Tensor  # (width,) 1 for rows [0, a) whose lengths advance
    a: int = -1
    run: Any = None
    logits: torch.Tensor | None = None  # (width, V)
    picked: torch.Tensor | None = None  # (2, width) float64: greedy ids, their log-probs


@dataclass
class _Request:
    prompt: list[int]
    trie: Any  # models.generation.ChoiceTrie | None
    limit: int
    ids: list[int]
    logprobs: list[float]
    allowed: list[list[int]] | None
    stopped: bool = False
    done: bool = False


class KVEngine:
    """Generation over a slot-addressed in-place KV cache; see the module docstring."""

    def __init__(self, model: Any, tokenizer: Any, max_cache_bytes: int | None = None, cuda_graphs: bool = True):
        if not engine_supports(model):
            raise ValueError(f"KVEngine: model type {getattr(core_model(model).config, 'model_type', '?')!r} is not "
                             f"supported (expected one of {SUPPORTED_MODEL_TYPES})")
        self.model, self.core = model, core_model(model)
        self.tokenizer = tokenizer
        c = self.core.config
        self.n_layers = c.num_hidden_layers
        self.n_heads = c.num_attention_heads
        self.n_kv = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
        self.head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        self.max_cache_bytes = max_cache_bytes
        self.cuda_graphs = cuda_graphs
        self.padded_decode = False
        """run the static-shape decode of the CUDA-graph path without CUDA (tests)"""
        self.profile = False
        """time prefill / decode / graph capture / sampling into `timing` (synchronizes CUDA)"""
        self.timing = {"prefill_s": 0.0, "decode_s": 0.0, "capture_s": 0.0, "sample_s": 0.0}
        self._stop_set: set[int] = set()  # the current call's end tokens
        self._graphs: dict = {}  # (width, capacity) -> _PaddedStep
        self._last_padded: _PaddedStep | None = None
        self._graph_key: tuple | None = None
        self.K: torch.Tensor | None = None  # (L, S, Hkv, C, D)
        self.V: torch.Tensor | None = None
        self.tokens: list[list[int]] = []  # ids whose K/V row s holds
        self.lengths: torch.Tensor | None = None  # (S,) long, == len(tokens[s])
        self.owner: list[Hashable | None] = []  # the key a slot belongs to (None = free)
        self.stats = {"prefill_tokens": 0, "reused_tokens": 0, "shared_prefill_rows": 0, "decode_steps": 0,
                      "graph_picks": 0}
        self._trainable = [q for q in self.core.parameters() if q.requires_grad]
        self._lora_layer = next((m for m in self.core.modules() if hasattr(m, "lora_A")), None)
        self._weights_seen: tuple | None = None

    # -- public API ------------------------------------------------------------------------------
    def release(self, keys: list[Hashable] | None = None) -> None:
        """Forget the cached ids of `keys` (all keys when None); the memory stays allocated."""
        for s, k in enumerate(self.owner):
            if k is not None and (keys is None or k in keys):
                self.owner[s] = None

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], settings: Any, stops: list[int],
                 keys: list[Hashable] | None = None, tries: list[Any] | None = None,
                 generator: torch.Generator | None = None) -> list[tuple[list[int], list[float], bool, Any]]:
        """(ids, logprobs, stopped, allowed) per prompt, in input order. `settings` is a
        `GenerationSettings`; `keys[i]` names the sequence prompt i continues (None: a one-off)."""
        n = len(prompts)
        if n == 0:
            return []
        tries = tries or [None] * n
        keys = list(keys) if keys is not None else [None] * n
        if len(set(k for k in keys if k is not None)) != sum(k is not None for k in keys):
            raise ValueError("KVEngine.generate: keys must be distinct within one call")
        temperature = settings.temperature if settings.do_sample else 1.0
        self._stop_set = set(stops)
        reqs = [_Request(prompt=list(p), trie=t, limit=t.depth if t is not None else settings.max_new_tokens,
                         ids=[], logprobs=[], allowed=[] if t is not None else None) for p, t in zip(prompts, tries)]
        for p in prompts:
            if not p:
                raise ValueError("KVEngine.generate: empty prompt")
        was_training = self.model.training
        self.model.eval()
        try:
            seen = self._fingerprint()
            if seen != self._weights_seen:  # weights or adapter state changed: cached K/V are stale
                self._weights_seen = seen
                if self.K is not None:
                    self.tokens = [[] for _ in self.tokens]
                    self.lengths.zero_()
            graph_key = (seen[1], tuple(q.data_ptr() for q in self.core.parameters()))
            if graph_key != self._graph_key:  # adapter switched or parameters moved: recapture
                self._graphs, self._graph_key = {}, graph_key
            need = max(len(p) + r.limit + 1 for p, r in zip(prompts, reqs))
            self._reserve(n, need)
            where = self._place(keys, prompts)  # rows [0, n) hold this call's requests
            self._decode_all(reqs, where, settings, temperature, generator)
        finally:
            self.model.train(was_training)
        for row, i in enumerate(where):  # one-off requests give their rows back (cached ids stay reusable)
            self.owner[row] = keys[i]
        return [(r.ids, r.logprobs, r.stopped, r.allowed) for r in reqs]

    # -- cache management ------------------------------------------------------------------------
    def _fingerprint(self) -> tuple:
        """What the cached K/V depend on beyond the ids: the trainable weights' values (a sum and a sum of
        squares of a strided sample of each: optimizers such as fused AdamW update in place without
        bumping `_version`) and peft's adapter switches."""
        if self._trainable:  # ~1k strided elements per tensor: an update moves (almost) all of them
            picks = [q.detach().reshape(-1)[:: max(1, q.numel() // 1024)].float() for q in self._trainable]
            sums = torch.stack([torch.stack([x.sum(), x.square().sum()]) for x in picks])
            values = tuple(sums.flatten().tolist())
        else:
            values = ()
        lora = self._lora_layer
        if lora is None:
            return values, ()
        active = lora.active_adapters() if callable(lora.active_adapters) else lora.active_adapters
        switches = (bool(lora.disable_adapters), tuple(active))
        return values, switches

    def _reserve(self, rows: int, length: int) -> None:
        """Grow the cache to at least `rows` slots of `length` positions (copying what it holds)."""
        emb = self.core.model.embed_tokens.weight  # the compute dtype, also under 4-bit quantization
        dtype, device = emb.dtype, emb.device
        S = 0 if self.K is None else self.K.shape[1]
        C = 0 if self.K is None else self.K.shape[3]
        if self.K is not None and self.K.dtype != dtype:
            S = C = 0  # dtype changed: start over
        if rows <= S and length <= C:
            return
        new_S = max(rows, S)
        new_C = max(C, -(-length // 256) * 256)
        shape = (self.n_layers, new_S, self.n_kv, new_C, self.head_dim)
        need_bytes = 2 * torch.Size(shape).numel() * torch.tensor([], dtype=dtype).element_size()
        if self.max_cache_bytes is not None and need_bytes > self.max_cache_bytes:
            raise MemoryError(f"KVEngine: a cache of {rows} rows x {length} positions needs {need_bytes / 2**30:.1f} GiB, "
                              f"over max_cache_bytes ({self.max_cache_bytes / 2**30:.1f} GiB); lower the batch or "
                              "the context length")
        K = torch.zeros(shape, dtype=dtype, device=device)
        V = torch.zeros(shape, dtype=dtype, device=device)
        if self.K is not None and S and C:
            K[:, :S, :, :C] = self.K[:, :S, :, :C]
            V[:, :S, :, :C] = self.V[:, :S, :, :C]
            lengths = torch.cat([self.lengths, torch.zeros(new_S - S, dtype=torch.long, device=device)])
        else:
            self.tokens, self.owner = [], []
            lengths = torch.zeros(new_S, dtype=torch.long, device=device)
        self.K, self.V, self.lengths = K, V, lengths
        self._graphs = {}  # they captured the old tensors
        self.tokens += [[] for _ in range(new_S - len(self.tokens))]
        self.owner += [None] * (new_S - len(self.owner))

    def _place(self, keys: list[Hashable | None], prompts: list[list[int]]) -> list[int]:
        """Bring this call's requests into rows [0, n) (in place: graphs keep their tensors) and return
        `where` (row -> request). A keyed request takes its key's slot, a one-off request the free slot
        sharing the longest prefix with its prompt (or any free slot)."""
        S = self.K.shape[1]
        slot_of = {k: s for s, k in enumerate(self.owner) if k is not None}
        chosen: list[int | None] = [slot_of.get(k) if k is not None else None for k in keys]
        taken = {s for s in chosen if s is not None}
        for k, s in slot_of.items():  # keys not in this call keep their slots unless space runs out
            if k not in keys:
                taken.add(s)
        free = [s for s in range(S) if s not in taken]
        for i, s in enumerate(chosen):
            if s is None:
                if not free:  # evict the first keyed slot not in this call
                    victim = next(s2 for s2 in range(S) if s2 not in {c for c in chosen if c is not None}
                                  and self.owner[s2] not in keys)
                    self.owner[victim] = None
                    free.append(victim)
                best = max(free, key=lambda f: _common_prefix(self.tokens[f], prompts[i]), default=free[0])
                free.remove(best)
                chosen[i] = best
        n = len(prompts)
        holes = iter(sorted(set(range(n)) - set(chosen)))
        for i, s in enumerate(chosen):
            if s >= n:  # swap it with a row of [0, n) that no request chose
                h = next(holes)
                self._swap(s, h)
                chosen[i] = h
        where = [0] * n
        for i, s in enumerate(chosen):
            where[s] = i
            self.owner[s] = None  # rows of this call; set to their key at the end
        return where

    def _swap(self, a: int, b: int) -> None:
        if a == b:
            return
        idx, rev = torch.tensor([a, b], device=self.K.device), torch.tensor([b, a], device=self.K.device)
        L = max(len(self.tokens[a]), len(self.tokens[b]), int(self.lengths[a]), int(self.lengths[b])) + 1
        L = min(L, self.K.shape[3])  # only the filled positions move (+1: a padded decode's write slot)
        self.K[:, idx, :, :L] = self.K[:, rev, :, :L]
        self.V[:, idx, :, :L] = self.V[:, rev, :, :L]
        self.lengths[idx] = self.lengths[rev]
        self.tokens[a], self.tokens[b] = self.tokens[b], self.tokens[a]
        self.owner[a], self.owner[b] = self.owner[b], self.owner[a]

    # -- the loop --------------------------------------------------------------------------------
    def _decode_all(self, reqs: list[_Request], where: list[int], settings: Any, temperature: float,
                    generator: torch.Generator | None) -> None:
        """Decode every request of rows [0, n) (`where`: row -> request, updated as rows move)."""
        n = len(reqs)
        row_of = {i: r for r, i in enumerate(where)}
        for t in range(n):  # request order first: admission and sampling order (hence seeded draws) repeat
            r = row_of[t]
            if r != t:
                self._swap(r, t)
                u = where[t]
                where[t], where[r] = t, u
                row_of[t], row_of[u] = t, r
        active, waiting = 0, n  # rows [0, active) decode, [active, active + waiting) wait, the rest are done
        next_tok: dict[int, int] = {}  # request -> its sampled token not yet fed
        bs = max(1, settings.batch_size)
        # greedy and unconstrained: the decode graph picks the ids itself and feeds them to its next replay
        fast = not settings.do_sample and all(q.trie is None for q in reqs)
        fed = False  # the padded decode's input already holds rows [0, active)'s next ids (same rows as before)
        while active or waiting:
            if waiting and active <= bs // 2:  # refill: prefill waiting requests into the free places
                k = min(waiting, bs - active)
                rows = list(range(active, active + k))
                with self._timed("prefill_s"):
                    logits = self._prefill(rows, [reqs[where[r]].prompt for r in rows])
                active, waiting, fed = active + k, waiting - k, False
                picked = self._sample(logits, [reqs[where[r]] for r in rows], temperature, settings, generator)
                for r, tok in zip(rows, picked):
                    next_tok[where[r]] = tok
            else:
                fed = fed and ((self.K.is_cuda and self.cuda_graphs) or self.padded_decode)  # a failed capture
                ids = None if fed else torch.tensor([next_tok[where[r]] for r in range(active)], device=self.K.device)
                with self._timed("decode_s"):
                    logits = self._step(ids, active, want_logits=not fast)
                rows_reqs = [reqs[where[r]] for r in range(active)]
                if isinstance(logits, torch.Tensor):
                    picked = self._sample(logits, rows_reqs, temperature, settings, generator)
                else:  # the graph's greedy pick: (ids, log-probs) already chosen on the device
                    with self._timed("sample_s"):
                        picked = self._record(rows_reqs, *logits, [None] * active)
                    fed = True
                    self.stats["graph_picks"] += 1
                for r, tok in enumerate(picked):
                    next_tok[where[r]] = tok
            # retire finished rows: swap them behind the active and waiting ones
            r = 0
            while r < active:
                q = reqs[where[r]]
                if q.done:
                    fed = False
                    self._finish_row(r, q)
                    last_active, last_wait = active - 1, active + waiting - 1
                    self._swap(r, last_active)
                    where[r], where[last_active] = where[last_active], where[r]
                    self._swap(last_active, last_wait)
                    where[last_active], where[last_wait] = where[last_wait], where[last_active]
                    active -= 1
                    continue  # row r now holds another active request
                r += 1

    def _finish_row(self, row: int, q: _Request) -> None:
        """The row's cache holds the prompt and the sampled ids fed so far (never the last one, nor a forced
        tail appended by `_fast_forward`: the next turn's prefill feeds those)."""
        fed = int(self.lengths[row])
        assert len(q.prompt) <= fed < len(q.prompt) + len(q.ids), "cache length bookkeeping"
        self.tokens[row] = (q.prompt + q.ids)[:fed]

    def _sample(self, logits: torch.Tensor, reqs: list[_Request], temperature: float, settings: Any,
                generator: torch.Generator | None) -> list[int]:
        """Pick one id per row (logits (b, V)), record id + log-prob, mark finished requests."""
        with self._timed("sample_s"):
            return self._sample_inner(logits, reqs, temperature, settings, generator)

    def _sample_inner(self, logits: torch.Tensor, reqs: list[_Request], temperature: float, settings: Any,
                      generator: torch.Generator | None) -> list[int]:
        allowed = [(q.trie.allowed(q.ids) or [0]) if q.trie is not None else None for q in reqs]
        out, chosen_lp = pick_tokens(logits, allowed, temperature, settings.do_sample, settings.top_p, generator)
        return self._record(reqs, out, chosen_lp, allowed)

    def _record(self, reqs: list[_Request], out: list[int], chosen_lp: list[float], allowed: list) -> list[int]:
        """Append each row's picked id and log-prob to its request; mark stopped / finished requests."""
        stops = self._stop_set
        for q, tok, lp, a in zip(reqs, out, chosen_lp, allowed):
            q.ids.append(tok)
            q.logprobs.append(lp)
            if q.trie is not None:
                q.allowed.append(a)
                _fast_forward(q)
                q.stopped = q.ids[-1] in stops
                q.done = not q.trie.allowed(q.ids) or len(q.ids) >= q.limit
            else:
                q.stopped = tok in stops
                q.done = q.stopped or len(q.ids) >= q.limit
        return out

    # -- model passes ----------------------------------------------------------------------------
    def _prefill(self, rows: list[int], prompts: list[list[int]]) -> torch.Tensor:
        """Feed each row's prompt beyond what its cache already holds; identical prompts are prefilled
        once. Returns next-token logits (len(rows), V)."""
        device = self.K.device
        leaders: dict[tuple, int] = {}
        lead_of = []
        for r, p in zip(rows, prompts):
            reuse = min(_common_prefix(self.tokens[r], p), len(p) - 1)
            self.tokens[r] = p[:reuse]
            self.lengths[r] = reuse
            key = tuple(p)
            lead_of.append(leaders.setdefault(key, r))
        uniq = sorted(set(lead_of))
        by_row = dict(zip(rows, prompts))
        last_logits: dict[int, torch.Tensor] = {}
        for chunk in _chunks(uniq, by_row, self.tokens, budget=1 << 24):
            last_logits.update(self._prefill_rows(chunk, [by_row[r] for r in chunk]))
        for r, lead, p in zip(rows, lead_of, prompts):
            if lead != r:  # copy the leader's K/V instead of recomputing it
                L = len(p)
                self.K[:, r, :, :L] = self.K[:, lead, :, :L]
                self.V[:, r, :, :L] = self.V[:, lead, :, :L]
                self.lengths[r] = L
                self.stats["shared_prefill_rows"] += 1
            self.tokens[r] = list(p)
        return torch.stack([last_logits[lead] for lead in lead_of]).to(device)

    def _prefill_rows(self, rows: list[int], prompts: list[list[int]]) -> dict[int, torch.Tensor]:
        device = self.K.device
        starts = [len(self.tokens[r]) for r in rows]
        news = [p[s:] for p, s in zip(prompts, starts)]
        self.stats["prefill_tokens"] += sum(map(len, news))
        self.stats["reused_tokens"] += sum(starts)
        T = max(map(len, news))
        b = len(rows)
        ids = torch.zeros((b, T), dtype=torch.long)
        valid = torch.zeros((b, T), dtype=torch.bool)
        for i, x in enumerate(news):
            ids[i, :len(x)] = torch.tensor(x)
            valid[i, :len(x)] = True
        start = torch.tensor(starts)
        pos = (start[:, None] + torch.arange(T)[None, :])
        ids, valid, pos = ids.to(device), valid.to(device), pos.to(device)
        Lk = int(pos[valid].max()) + 1
        row_t = torch.tensor(rows, device=device)
        contiguous = rows == list(range(rows[0], rows[0] + b))
        # attention mask (b, 1, T, Lk): key j visible to query t iff j <= pos[t]
        mask = torch.arange(Lk, device=device)[None, None, :] <= pos[:, :, None]
        rr, tt = valid.nonzero(as_tuple=True)
        write_rows, write_pos = row_t[rr], pos[rr, tt]

        def attend(layer: int, q, k, v):
            self.K[layer, write_rows, :, write_pos] = k.transpose(1, 2)[rr, tt]
            self.V[layer, write_rows, :, write_pos] = v.transpose(1, 2)[rr, tt]
            if contiguous:
                Kc, Vc = self.K[layer, rows[0]:rows[0] + b, :, :Lk], self.V[layer, rows[0]:rows[0] + b, :, :Lk]
            else:
                Kc, Vc = self.K[layer, row_t, :, :Lk], self.V[layer, row_t, :, :Lk]
            return grouped_attention(q, Kc, Vc, mask[:, None])

        h = decoder_forward(self.core, ids, pos, attend)
        last = valid.sum(1) - 1
        hl = h[torch.arange(b, device=device), last]
        logits = self.core.lm_head(self.core.model.norm(hl))
        for r, x in zip(rows, news):
            self.lengths[r] += len(x)
        return {r: logits[i] for i, r in enumerate(rows)}

    def _step(self, ids: torch.Tensor | None, a: int, want_logits: bool = True):
        """One decode step for rows [0, a): feed `ids` (a,) and return the next logits (a, V). On the padded
        (CUDA-graph) path `ids` None feeds the graph's own previous greedy picks, and want_logits=False
        returns that step's greedy (ids, log-probs) as lists instead of logits (one device->host copy)."""
        self.stats["decode_steps"] += 1
        if (self.K.is_cuda and self.cuda_graphs) or self.padded_decode:
            return self._step_padded(ids, a, want_logits)
        if ids is None:
            raise RuntimeError("KVEngine._step: ids are required on the eager path")
        pos = self.lengths[:a].clone()
        Lk = int(pos.max()) + 1
        logits = self._step_eager(ids, pos, a, Lk)
        self.lengths[:a] += 1
        return logits

    def _step_eager(self, ids: torch.Tensor, pos: torch.Tensor, a: int, Lk: int) -> torch.Tensor:
        device = self.K.device
        rows = torch.arange(a, device=device)
        mask = (torch.arange(Lk, device=device)[None, :] <= pos[:, None])[:, None, None, :]  # (a, 1, 1, Lk)

        def attend(layer: int, q, k, v):
            self.K[layer, rows, :, pos] = k[:, :, 0]
            self.V[layer, rows, :, pos] = v[:, :, 0]
            return grouped_attention(q, self.K[layer, :a, :, :Lk], self.V[layer, :a, :, :Lk], mask)

        h = decoder_forward(self.core, ids[:, None], pos[:, None], attend)
        return self.core.lm_head(self.core.model.norm(h[:, 0]))

    def _step_padded(self, ids: torch.Tensor | None, a: int, want_logits: bool = True):
        """Decode with static shapes, as a CUDA graph replays it: a padded row count (power of two, capped
        at the slot count) over the full cache capacity. Padded rows write K/V only at their own next
        position, which lies beyond their valid ids (a waiting row's prefill overwrites it). The graph also
        advances the active rows' lengths, picks the greedy id and its log-prob of every row and copies the
        ids into its own input, so a greedy decode of unchanged rows needs one replay and one device->host
        copy per step. Without CUDA (tests: `padded_decode`) the same body runs eagerly."""
        S, C = self.K.shape[1], self.K.shape[3]
        width = min(S, 1 << (a - 1).bit_length())
        g = self._graphs.get((width, C))
        if g is None:
            g = self._graphs[(width, C)] = self._build_padded(width, C)
        if g.a != a:
            g.active.zero_()
            g.active[:a] = 1
            g.a = a
        if ids is not None:
            g.ids.zero_()
            g.ids[:a] = ids
        elif g is not self._last_padded:  # the previous step ran another graph: take over its picks
            g.ids[:a] = self._last_padded.ids[:a]
        self._last_padded = g
        g.run()
        if want_logits:
            return g.logits[:a].clone()
        picked = g.picked[:, :a].tolist()  # one copy: row 0 ids, row 1 log-probs (float64: both exact)
        return [int(x) for x in picked[0]], picked[1]

    def _build_padded(self, width: int, C: int) -> "_PaddedStep":
        """The padded decode step of `width` rows over capacity C: captured as a CUDA graph on GPU (warm-up
        on a side stream; lengths and K/V restored after it), an eager closure otherwise."""
        device = self.K.device
        st = _PaddedStep(ids=torch.zeros(width, dtype=torch.long, device=device),
                         active=torch.zeros(width, dtype=torch.long, device=device))

        def body() -> None:
            pos = self.lengths[:width].clamp(max=C - 1)
            logits = self._step_eager(st.ids, pos, width, C)
            self.lengths[:width] += st.active
            logp = torch.log_softmax(logits.float(), dim=-1)  # == pick_tokens' greedy pick (temperature 1)
            best = logp.argmax(-1)
            st.picked = torch.stack((best.double(), logp.gather(-1, best[:, None])[:, 0].double()))
            st.logits = logits
            st.ids.copy_(best)

        if not self.K.is_cuda:
            st.run = body
            return st
        t0 = time.perf_counter()
        saved = self.lengths.clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # writes garbage K/V at each row's next position: see the docstring above
                body()
        torch.cuda.current_stream().wait_stream(stream)
        self.lengths.copy_(saved)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                body()
        except Exception as e:  # noqa: BLE001 -- a kernel that cannot be captured: decode eagerly from now on
            log.warning("KVEngine: CUDA graph capture failed (%s: %s); decoding without graphs", type(e).__name__,
                        str(e).splitlines()[0] if str(e) else "", exc_info=True)
            self.cuda_graphs = False
            torch.cuda.synchronize()
            self.lengths.copy_(saved)
            st.run = body  # this call finishes eagerly on the padded shapes; the next ones take the eager path
            return st
        st.run = graph.replay
        self.timing["capture_s"] += time.perf_counter() - t0
        return st

    @contextmanager
    def _timed(self, key: str):
        if not self.profile:
            yield
            return
        if self.K is not None and self.K.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        yield
        if self.K is not None and self.K.is_cuda:
            torch.cuda.synchronize()
        self.timing[key] += time.perf_counter() - t0


# -- internals ---------------------------------------------------------------------------------
def _fast_forward(q: _Request) -> None:
    """Choice mode: when the ids sampled so far leave exactly one way to complete a candidate, append the rest
    of it at once (log-prob 0 and a single allowed id each, exactly what decoding them would give) instead of
    spending one decode step per forced token. A forced stretch that ends in a branch is left to decoding."""
    node, path = q.trie.root, []
    for t in q.ids:
        node = node[t]
    while len(node) == 1:
        (t, node), = node.items()
        path.append(t)
    if path and not node:  # a unique completion
        q.ids += path
        q.logprobs += [0.0] * len(path)
        q.allowed += [[t] for t in path]


def _common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix (binary search over C-speed slice comparisons)."""
    lo, hi = 0, min(len(a), len(b))
    if a[:hi] == b[:hi]:
        return hi
    while lo < hi:  # invariant: a[:lo] == b[:lo], a[:hi+1] != b[:hi+1] is not yet known
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _chunks(rows: list[int], prompts: dict[int, list[int]], cached: list[list[int]], budget: int):
    """Split prefill rows (sorted by new-token count) so rows x T x Lk stays under `budget` elements."""
    def new_len(r: int) -> int:
        return len(prompts[r]) - min(_common_prefix(cached[r], prompts[r]), len(prompts[r]) - 1)

    ordered = sorted(rows, key=new_len)
    chunk: list[int] = []
    for r in ordered:
        T = new_len(r)
        if chunk and (len(chunk) + 1) * T * len(prompts[r]) > budget:
            yield chunk
            chunk = []
        chunk.append(r)
    if chunk:
        yield chunk
