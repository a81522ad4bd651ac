"""The generation engine's KV cache: one pre-allocated (layers, slots, kv_heads, capacity, head_dim) tensor
pair whose rows ("slots") are addressed by key, so a multi-turn episode finds its earlier turns' K/V again.

Bookkeeping per slot: `tokens[s]` (the ids whose K/V the slot holds, a prefix of what it was fed), `lengths[s]`
(on the cache's device, == len(tokens[s]) between calls) and `owner[s]` (the key it belongs to, None when
free). A call's requests are brought into the contiguous rows [0, n) by swapping slots in place, so tensors
captured by CUDA graphs stay valid; only growing the cache allocates new tensors (`reserve` says so).
"""

from __future__ import annotations

from typing import Hashable

import torch

__all__ = ["KVSlots", "common_prefix"]


class KVSlots:
    """The slot-addressed in-place KV cache (see the module docstring)."""

    def __init__(self, n_layers: int, n_kv_heads: int, head_dim: int, max_bytes: int | None = None):
        self.n_layers, self.n_kv, self.head_dim = n_layers, n_kv_heads, head_dim
        self.max_bytes = max_bytes
        self.K: torch.Tensor | None = None  # (L, S, Hkv, C, D)
        self.V: torch.Tensor | None = None
        self.lengths: torch.Tensor | None = None  # (S,) long
        self.tokens: list[list[int]] = []
        self.owner: list[Hashable | None] = []

    @property
    def slots(self) -> int:
        return 0 if self.K is None else self.K.shape[1]

    @property
    def capacity(self) -> int:
        return 0 if self.K is None else self.K.shape[3]

    def release(self, keys: list[Hashable] | None = None) -> None:
        """Free the slots of `keys` (all keys when None); their ids stay reusable as a shared prefix."""
        for s, k in enumerate(self.owner):
            if k is not None and (keys is None or k in keys):
                self.owner[s] = None

    def forget(self) -> None:
        """Drop every cached id (the weights changed: the K/V are stale); the memory stays allocated."""
        if self.K is not None:
            self.tokens = [[] for _ in self.tokens]
            self.lengths.zero_()

    def reserve(self, rows: int, length: int, dtype: torch.dtype, device: torch.device) -> bool:
        """Grow the cache to at least `rows` slots of `length` positions (copying what it holds); True when
        new tensors were allocated (anything that captured the old ones must let go of them)."""
        S, C = self.slots, self.capacity
        if self.K is not None and self.K.dtype != dtype:
            S = C = 0  # dtype changed: start over
        if rows <= S and length <= C:
            return False
        new_S = max(rows, S)
        new_C = max(C, -(-length // 256) * 256)
        shape = (self.n_layers, new_S, self.n_kv, new_C, self.head_dim)
        need_bytes = 2 * torch.Size(shape).numel() * torch.tensor([], dtype=dtype).element_size()
        if self.max_bytes is not None and need_bytes > self.max_bytes:
            raise MemoryError(f"KVEngine: a cache of {rows} rows x {length} positions needs {need_bytes / 2**30:.1f} GiB, "
                              f"over max_cache_bytes ({self.max_bytes / 2**30:.1f} GiB); lower the batch or "
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
        self.tokens += [[] for _ in range(new_S - len(self.tokens))]
        self.owner += [None] * (new_S - len(self.owner))
        return True

    def place(self, keys: list[Hashable | None], prompts: list[list[int]]) -> list[int]:
        """Bring a call's requests into rows [0, n) (in place) and return `where` (row -> request). A keyed
        request takes its key's slot, a one-off request the free slot sharing the longest prefix with its
        prompt (or any free slot); when none is free, the first keyed slot not in this call is evicted."""
        S = self.slots
        slot_of = {k: s for s, k in enumerate(self.owner) if k is not None}
        chosen: list[int | None] = [slot_of.get(k) if k is not None else None for k in keys]
        in_call = set(k for k in keys if k is not None)
        taken = {s for s in chosen if s is not None}
        taken |= {s for k, s in slot_of.items() if k not in in_call}  # other keys keep their slots if there is room
        free = [s for s in range(S) if s not in taken]
        for i, s in enumerate(chosen):
            if s is None:
                if not free:
                    mine = {c for c in chosen if c is not None}
                    victim = next(s2 for s2 in range(S) if s2 not in mine and self.owner[s2] not in in_call)
                    self.owner[victim] = None
                    free.append(victim)
                best = max(free, key=lambda f: common_prefix(self.tokens[f], prompts[i]))
                free.remove(best)
                chosen[i] = best
        n = len(prompts)
        holes = iter(sorted(set(range(n)) - set(chosen)))
        for i, s in enumerate(chosen):
            if s >= n:  # swap it with a row of [0, n) that no request chose
                h = next(holes)
                self.swap(s, h)
                chosen[i] = h
        where = [0] * n
        for i, s in enumerate(chosen):
            where[s] = i
            self.owner[s] = None  # rows of this call; set to their key at the end
        return where

    def swap(self, a: int, b: int) -> None:
        """Exchange two slots: their filled K/V positions, lengths, ids and owners."""
        if a == b:
            return
        idx, rev = torch.tensor([a, b], device=self.K.device), torch.tensor([b, a], device=self.K.device)
        L = max(len(self.tokens[a]), len(self.tokens[b]), int(self.lengths[a]), int(self.lengths[b])) + 1
        L = min(L, self.capacity)  # only the filled positions move (+1: a padded decode's write slot)
        self.K[:, idx, :, :L] = self.K[:, rev, :, :L]
        self.V[:, idx, :, :L] = self.V[:, rev, :, :L]
        self.lengths[idx] = self.lengths[rev]
        self.tokens[a], self.tokens[b] = self.tokens[b], self.tokens[a]
        self.owner[a], self.owner[b] = self.owner[b], self.owner[a]

    def copy_row(self, src: int, dst: int, ids: list[int]) -> None:
        """Give slot `dst` the K/V `src` holds for `ids` (a shared prompt prefilled once)."""
        L = len(ids)
        self.K[:, dst, :, :L] = self.K[:, src, :, :L]
        self.V[:, dst, :, :L] = self.V[:, src, :, :L]
        self.lengths[dst] = L
        self.tokens[dst] = list(ids)


def common_prefix(a: list[int], b: list[int]) -> int:
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
