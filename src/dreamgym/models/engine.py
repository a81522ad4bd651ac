"""KV-cache generation engine: the fast backend behind `models.generation` for Llama-family decoders
(Llama, SmolLM2, Qwen2, Qwen3, Mistral without sliding window); any other model falls back to HF
`generate`.

Why it is faster than HF `generate` on the workloads that matter here (multi-turn GRPO rollouts):
- **In-place KV cache** (`models.kv_slots`): one pre-allocated (layers, slots, kv_heads, capacity, head_dim)
  tensor pair; each decode step writes one position per row (`index_put_`), nothing is concatenated or copied.
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
- **CUDA graphs** (GPU only, `models.padded_decode`): the decode step for a padded row count is captured
  once and replayed, removing per-kernel launch overhead; a greedy step also picks its ids on the device.
  Captures are dropped when the adapter switches, a parameter moves or the cache grows, and cached K/V
  when the trainable weights change, so a toggled adapter or an updated model is always seen.

The LoRA adapter is whatever peft has active in the model's modules (no merge, no copy); inside
`model.disable_adapter()` the engine generates with the base. Token ids and log-probs match HF
`generate` (greedy: the same tokens; log-probs within float tolerance, see tests/test_engine.py).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Hashable

import torch

from dreamgym.models.kv_slots import KVSlots, common_prefix
from dreamgym.models.padded_decode import PaddedDecoder
from dreamgym.models.sampling import pick_tokens
from dreamgym.models.decoder import (SUPPORTED_MODEL_TYPES, additive_mask, core_model, decoder_forward,
                                     grouped_attention, layer_out, layer_qkv, rms_norm, supports)

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
        self.cache = KVSlots(self.n_layers, self.n_kv, self.head_dim, max_cache_bytes)
        self.cuda_graphs = cuda_graphs
        self.padded_decode = False
        """run the static-shape decode of the CUDA-graph path without CUDA (tests)"""
        self.compile_decode = False
        """compile the static-shape decode step's layers with `torch.compile` (fused kernels) before capturing
        it (regional: `decoder.layer_qkv`/`layer_out` once for all layers; the cache writes stay eager)"""
        self._compiled_layers: tuple | None = None
        self.profile = False
        """time prefill / decode / graph capture / sampling into `timing` (synchronizes CUDA)"""
        self.timing = {"prefill_s": 0.0, "decode_s": 0.0, "capture_s": 0.0, "sample_s": 0.0}
        self._stop_set: set[int] = set()  # the current call's end tokens
        self.padded = PaddedDecoder(self)  # the static-shape (CUDA-graph) decode steps
        self._graph_key: tuple | None = None
        self.stats = {"prefill_tokens": 0, "reused_tokens": 0, "shared_prefill_rows": 0, "decode_steps": 0,
                      "graph_picks": 0}
        self._trainable = [q for q in self.core.parameters() if q.requires_grad]
        self._lora_layer = next((m for m in self.core.modules() if hasattr(m, "lora_A")), None)
        self._weights_seen: tuple | None = None

    # the cache's tensors and bookkeeping (models.kv_slots), named as the passes below use them
    K = property(lambda self: self.cache.K, doc="(layers, slots, kv_heads, capacity, head_dim) keys")
    V = property(lambda self: self.cache.V, doc="the values, shaped as K")
    lengths = property(lambda self: self.cache.lengths, doc="(slots,) long: positions each slot holds")
    tokens = property(lambda self: self.cache.tokens, doc="the ids whose K/V each slot holds")
    owner = property(lambda self: self.cache.owner, doc="the key each slot belongs to (None: free)")

    # -- public API ------------------------------------------------------------------------------
    def release(self, keys: list[Hashable] | None = None) -> None:
        """Free the slots of `keys` (all keys when None); the memory stays allocated and the ids stay
        reusable as a shared prefix."""
        self.cache.release(keys)

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
                self.cache.forget()
            graph_key = (seen[1], tuple(q.data_ptr() for q in self.core.parameters()), self.compile_decode)
            if graph_key != self._graph_key:  # adapter switched, parameters moved or compile toggled: recapture
                self.padded.drop()
                self._graph_key = graph_key
            need = max(len(p) + r.limit + 1 for p, r in zip(prompts, reqs))
            emb = self.core.model.embed_tokens.weight  # the compute dtype, also under 4-bit quantization
            if self.cache.reserve(n, need, emb.dtype, emb.device):
                self.padded.drop()  # they captured the old tensors
            where = self.cache.place(keys, prompts)  # rows [0, n) hold this call's requests
            self._decode_all(reqs, where, settings, temperature, generator)
        finally:
            self.model.train(was_training)
        for row, i in enumerate(where):  # one-off requests give their rows back (cached ids stay reusable)
            self.owner[row] = keys[i]
        return [(r.ids, r.logprobs, r.stopped, r.allowed) for r in reqs]

    # -- cache management ------------------------------------------------------------------------
    def _fingerprint(self) -> tuple:
        """What the cached K/V depend on beyond the ids: the trainable weights' values (the L1 and L2 norm of
        each, in float32: optimizers such as fused AdamW update in place without bumping `_version`) and
        peft's adapter switches. Two multi-tensor norms and one device->host copy per call, whatever the
        number of tensors (a per-tensor sum was ~5 kernels for each of a LoRA's ~400 tensors every turn)."""
        if self._trainable:
            with torch.no_grad():
                norms = [torch.stack(torch._foreach_norm(self._trainable, order, dtype=torch.float32))
                         for order in (1, 2)]
            values = tuple(torch.stack(norms).flatten().tolist())
        else:
            values = ()
        lora = self._lora_layer
        if lora is None:
            return values, ()
        active = lora.active_adapters() if callable(lora.active_adapters) else lora.active_adapters
        switches = (bool(lora.disable_adapters), tuple(active))
        return values, switches

    # -- the loop --------------------------------------------------------------------------------
    def _decode_all(self, reqs: list[_Request], where: list[int], settings: Any, temperature: float,
                    generator: torch.Generator | None) -> None:
        """Decode every request of rows [0, n) (`where`: row -> request, updated as rows move)."""
        n = len(reqs)
        row_of = {i: r for r, i in enumerate(where)}
        for t in range(n):  # request order first: admission and sampling order (hence seeded draws) repeat
            r = row_of[t]
            if r != t:
                self.cache.swap(r, t)
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
                    self.cache.swap(r, last_active)
                    where[r], where[last_active] = where[last_active], where[r]
                    self.cache.swap(last_active, last_wait)
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
            reuse = min(common_prefix(self.tokens[r], p), len(p) - 1)
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
                self.cache.copy_row(lead, r, p)
                self.stats["shared_prefill_rows"] += 1
            else:
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
        logits = self.core.lm_head(rms_norm(self.core.model.norm, hl))
        for r, x in zip(rows, news):
            self.lengths[r] += len(x)
        return {r: logits[i] for i, r in enumerate(rows)}

    def _step(self, ids: torch.Tensor | None, a: int, want_logits: bool = True):
        """One decode step for rows [0, a): feed `ids` (a,) and return the next logits (a, V). On the padded
        (CUDA-graph) path `ids` None feeds the graph's own previous greedy picks, and want_logits=False
        returns that step's greedy (ids, log-probs) as lists instead of logits (one device->host copy)."""
        self.stats["decode_steps"] += 1
        if (self.K.is_cuda and self.cuda_graphs) or self.padded_decode:
            return self.padded.step(ids, a, want_logits)
        if ids is None:
            raise RuntimeError("KVEngine._step: ids are required on the eager path")
        pos = self.lengths[:a].clone()
        Lk = int(pos.max()) + 1
        logits = self._step_eager(ids, pos, a, Lk)
        self.lengths[:a] += 1
        return logits

    def compiled_layers(self) -> tuple:
        """(qkv, out): `decoder.layer_qkv`/`layer_out` through torch.compile, built once per engine. Compiling the
        layer pieces rather than the whole step keeps the KV cache writes out of compiled code: measured on an
        H100 (B = 16), compiling the whole step turned each write into copies of the whole cache (7 kernels of
        ~0.57 ms per step): its decode alone took 0.88 s for 69 steps, the whole uncompiled rollout 0.72 s."""
        if self._compiled_layers is None:
            self._compiled_layers = (torch.compile(layer_qkv), torch.compile(layer_out))
        return self._compiled_layers

    def _step_eager(self, ids: torch.Tensor, pos: torch.Tensor, a: int, Lk: int,
                    compiled: bool = False) -> torch.Tensor:
        device = self.K.device
        rows = torch.arange(a, device=device)
        mask = (torch.arange(Lk, device=device)[None, :] <= pos[:, None])[:, None, None, :]  # (a, 1, 1, Lk)
        if mask.is_cuda:  # decode attention runs as matmuls there: one bias for all layers
            mask = additive_mask(mask)

        def attend(layer: int, q, k, v):
            self.K[layer, rows, :, pos] = k[:, :, 0]
            self.V[layer, rows, :, pos] = v[:, :, 0]
            return grouped_attention(q, self.K[layer, :a, :, :Lk], self.V[layer, :a, :, :Lk], mask)

        qkv, out = self.compiled_layers() if compiled else (None, None)
        h = decoder_forward(self.core, ids[:, None], pos[:, None], attend, qkv, out)
        return self.core.lm_head(rms_norm(self.core.model.norm, h[:, 0]))

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


def _chunks(rows: list[int], prompts: dict[int, list[int]], cached: list[list[int]], budget: int):
    """Split prefill rows (sorted by new-token count) so rows x T x Lk stays under `budget` elements."""
    def new_len(r: int) -> int:
        return len(prompts[r]) - min(common_prefix(cached[r], prompts[r]), len(prompts[r]) - 1)

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
