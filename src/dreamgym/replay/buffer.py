"""Replay buffer: an hnswlib index (cosine) over phi(s, a) embeddings + the transitions it points to.

`buffer build` seeds it with real trajectories, rollouts in the synthetic env grow it with synthetic
ones, and the experience model asks it for the k transitions nearest (state, action) as grounding
demonstrations (`query`, excluding the asking transition's own trajectory). Filters by source and
env; identical transitions are stored once; a size cap evicts the oldest synthetic transitions first
and real ones only when no synthetic is left (an incoming synthetic transition never evicts a real
one: it is dropped instead). Queries whose filters leave few candidates run exactly.

On disk (`save`/`load`, layout and crash safety in `replay/store.py`): `index.bin` (hnswlib),
`records.jsonl` (one transition per line, oldest first, with its index label), `meta.json` (schema,
encoder name and dimension, index settings, counts, size + sha256 of the other two), each written
to a temp file and renamed, so a crash mid-save leaves a loadable copy, the old one or the new one.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import hnswlib
import numpy as np

from dreamgym.config import ReplayConfig
from dreamgym.replay.embed import Encoder, build_encoder, key_text
from dreamgym.replay.store import BUFFER_SCHEMA, BufferFileError, loadable_copy, read_meta, write_files
from dreamgym.types import Trajectory, Transition

__all__ = ["ReplayBuffer", "Hit", "SOURCES", "BufferFileError"]

SOURCES = ("real", "synthetic")
_OVERFETCH_MAX = 1024      # filtered queries first try one unfiltered search of at most this many neighbours


@dataclass
class Hit:
    """One retrieved transition and its cosine similarity to the query key."""

    transition: Transition
    similarity: float
    label: int = -1
    """the transition's label in the index (stable for the buffer's lifetime, saved with it)"""


class ReplayBuffer:
    """Everything a caller needs, in reading order: add, query, counts, save, load."""

    def __init__(self, encoder: Encoder, cfg: ReplayConfig | None = None, seed: int = 100):
        self.encoder, self.cfg, self.seed = encoder, cfg or ReplayConfig(), int(seed)
        self.dim = int(encoder.dim)
        self.key_state_chars = self.cfg.key_state_chars
        self.ef_search = self.cfg.ef_search
        self._index = hnswlib.Index(space="cosine", dim=self.dim)
        self._index.init_index(max_elements=self.cfg.capacity, M=self.cfg.M, ef_construction=self.cfg.ef_construction,
                               random_seed=self.seed, allow_replace_deleted=True)
        self._index.set_num_threads(1)
        self._records: dict[int, Transition] = {}        # label -> transition, oldest first (FIFO order)
        self._by_source: dict[str, dict[int, None]] = {s: {} for s in SOURCES}   # ordered label sets
        self._by_group: dict[tuple[str, str], dict[int, None]] = {}              # (source, env) -> labels
        self._by_traj: dict[str, set[int]] = {}
        self._by_key: dict[str, int] = {}                  # dedup key -> label
        self._next_label = 0
        self.stats = {"encoded": 0, "encode_s": 0.0, "insert_s": 0.0}

    @classmethod
    def from_config(cls, cfg: ReplayConfig, seed: int = 100) -> "ReplayBuffer":
        return cls(build_encoder(cfg.encoder, cfg.device, cfg.batch_size, cfg.hashing_dim, cfg.max_seq_length),
                   cfg, seed=seed)

    def __len__(self) -> int:
        return len(self._records)

    # -- growing --------------------------------------------------------------------------------
    def add(self, transitions: Iterable[Transition], embeddings: np.ndarray | None = None) -> dict[str, int]:
        """Encode (in batches) and insert transitions. `embeddings` (N, dim), when given, are used
        instead of encoding (benchmarks, precomputed keys). Returns counts: added, duplicates,
        evicted (stored transitions removed by the cap), dropped (synthetic refused by a cap full
        of real ones)."""
        transitions = list(transitions)
        for t in transitions:
            if t.source not in SOURCES:
                raise ValueError(f"transition {t.trajectory_id}:{t.step}: source {t.source!r}, expected real/synthetic")
        fresh: list[int] = []                              # positions in `transitions` to insert
        pending: dict[str, int] = {}
        promote: dict[int, Transition] = {}                # stored synthetic record -> identical real one
        for i, t in enumerate(transitions):
            key = _dedup_key(t) if self.cfg.dedup else None
            if key is not None and (key in self._by_key or key in pending):
                if key in self._by_key and t.source == "real" and self._records[self._by_key[key]].source != "real":
                    promote.setdefault(self._by_key[key], t)
                elif key in pending and t.source == "real":
                    j = pending[key]
                    transitions[j] = transitions[j] if transitions[j].source == "real" else t
                continue
            if key is not None:
                pending[key] = i
            fresh.append(i)
        out = {"added": 0, "duplicates": len(transitions) - len(fresh), "evicted": 0, "dropped": 0}
        if embeddings is not None:
            embeddings = np.asarray(embeddings, dtype=np.float32)
            if embeddings.shape != (len(transitions), self.dim):
                raise ValueError(f"embeddings shape {embeddings.shape}, expected ({len(transitions)}, {self.dim})")
            vecs = embeddings[fresh]
        else:
            texts = [key_text(transitions[i].state, transitions[i].action, self.key_state_chars) for i in fresh]
            if texts and getattr(self.encoder, "fitted", True) is False:   # bm25: corpus stats from the first add
                self.encoder.fit(texts)
            vecs = self._encode(texts)
        for label, t in promote.items():                           # nothing is mutated before encoding succeeded
            self._forget(label)
            self._remember(label, t)
        new_rows: dict[int, int] = {}                      # label -> row of `vecs`
        stale: list[int] = []                              # labels already in the index, to mark deleted
        for row, i in enumerate(fresh):
            t = transitions[i]
            if self.cfg.max_size and len(self._records) >= self.cfg.max_size:
                victims = self._by_source["synthetic"] or (self._by_source["real"] if t.source == "real" else {})
                if not victims:
                    out["dropped"] += 1
                    continue
                victim = next(iter(victims))
                self._forget(victim)
                if new_rows.pop(victim, None) is None:
                    stale.append(victim)
                    out["evicted"] += 1
                else:
                    out["added"] -= 1
            label = self._next_label
            self._next_label += 1
            self._remember(label, t)
            new_rows[label] = row
            out["added"] += 1
        t0 = time.perf_counter()
        for label in stale:
            self._index.mark_deleted(label)
        if new_rows:
            deleted = self._index.element_count - (len(self._records) - len(new_rows))   # slots to reuse
            free = self._index.max_elements - self._index.element_count + deleted
            if len(new_rows) > free:
                self._index.resize_index(max(2 * self._index.max_elements,
                                             self._index.max_elements + len(new_rows) - free))
            labels = np.fromiter(new_rows, dtype=np.int64, count=len(new_rows))
            self._index.add_items(vecs[list(new_rows.values())], labels, num_threads=self.cfg.num_threads,
                                  replace_deleted=True)
        self.stats["insert_s"] += time.perf_counter() - t0
        return out

    def add_trajectories(self, trajectories: Iterable[Trajectory]) -> dict[str, int]:
        """`add` every transition of the trajectories (one batched encode)."""
        return self.add([t for traj in trajectories for t in traj.transitions()])

    # -- retrieval ------------------------------------------------------------------------------
    def query(self, state: str, action: str, k: int, source: str | None = None, env: str | None = None,
              exclude_trajectory: str | None = None) -> list[Transition]:
        """The k stored transitions whose phi(s, a) is nearest (cosine) to phi(state, action), best
        first; fewer if fewer match the filters. `exclude_trajectory`: the asking transition's own
        trajectory id, so that a transition never retrieves itself."""
        hits = self.search([state], [action], k, source, env, [exclude_trajectory])[0]
        return [h.transition for h in hits]

    def search(self, states: list[str], actions: list[str], k: int, source: str | None = None,
               env: str | None = None, exclude_trajectories: list[str | None] | None = None) -> list[list[Hit]]:
        """Batched `query` with similarities: one batched encode, one hit list per (state, action)."""
        vecs = self._encode([key_text(s, a, self.key_state_chars) for s, a in zip(states, actions, strict=True)])
        return self.search_vectors(vecs, k, source, env, exclude_trajectories)

    def search_vectors(self, vecs: np.ndarray, k: int, source: str | None = None, env: str | None = None,
                       exclude_trajectories: list[str | None] | None = None) -> list[list[Hit]]:
        """Top-k by precomputed key vectors (Q, dim); the code path `query` ends in."""
        if source is not None and source not in SOURCES:
            raise ValueError(f"source {source!r}, expected one of {SOURCES} or None")
        vecs = np.asarray(vecs, dtype=np.float32).reshape(-1, self.dim)
        excludes = list(exclude_trajectories or [None] * len(vecs))
        if len(excludes) != len(vecs):
            raise ValueError(f"{len(excludes)} exclude_trajectories for {len(vecs)} queries")
        if k <= 0 or not self._records:
            return [[] for _ in vecs]
        groups = [g for g in self._by_group if (source is None or g[0] == source) and (env is None or g[1] == env)]
        n_group = sum(len(self._by_group[g]) for g in groups)
        out: list[list[Hit]] = []
        no_exclusion = all(x is None or x not in self._by_traj for x in excludes)
        if len(groups) == len(self._by_group) and n_group > self.cfg.exact_below and no_exclusion:
            return self._hnsw(vecs, min(k, n_group), None)          # no filter at all: one batched call
        for q, excl in zip(vecs, excludes):
            skip = self._by_traj.get(excl, set()) if excl is not None else set()
            n_allowed = n_group - sum(1 for lb in skip if self._group_of(lb) in groups)
            kk = min(k, n_allowed)
            if kk <= 0:
                out.append([])
            elif n_allowed <= self.cfg.exact_below:
                labels = [lb for g in groups for lb in self._by_group[g] if lb not in skip]
                out.append(self._exact(q, labels, kk))
            else:
                out.append(self._filtered(q, kk, set(groups), skip, n_allowed))
        return out

    def counts(self) -> dict:
        """{"total", "real", "synthetic", "by_env": {env: {"real", "synthetic"}}}."""
        by_env: dict[str, dict[str, int]] = {}
        for (src, env), labels in sorted(self._by_group.items()):
            by_env.setdefault(env, {s: 0 for s in SOURCES})[src] = len(labels)
        return {"total": len(self), **{s: len(self._by_source[s]) for s in SOURCES}, "by_env": by_env}

    def transitions(self) -> list[Transition]:
        """All stored transitions, oldest first."""
        return list(self._records.values())

    # -- persistence ----------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write index.bin, records.jsonl, meta.json to `directory` (temp files + renames, old copy
        kept in .prev/ until the new one is complete). Returns the directory."""
        lines = (json.dumps({"label": label, **t.to_dict()}, ensure_ascii=False) for label, t in self._records.items())
        return write_files(directory, lambda path: self._index.save_index(str(path)), lines, self._meta)

    @classmethod
    def load(cls, directory: str | Path, encoder: Encoder | None = None, cfg: ReplayConfig | None = None) -> "ReplayBuffer":
        """Load a saved buffer. `encoder` must be the one it was built with (name and dimension are
        checked); None builds it from meta.json's encoder name. What the files depend on (M,
        ef_construction, phi's state length, dedup) always comes from meta.json; the other settings
        (ef_search, cap, exact_below, threads) from `cfg` when given, else as saved."""
        d = loadable_copy(directory)
        meta = read_meta(d)
        saved = {k: v for k, v in (meta.get("config") or {}).items() if k in ReplayConfig.__dataclass_fields__}
        fixed = {k: meta[k] for k in ("M", "ef_construction", "key_state_chars", "dedup", "encoder")}  # files need these
        cfg = ReplayConfig(**{**(cfg.__dict__ if cfg else {**saved, "ef_search": meta["ef_search"],
                                                             "max_size": meta["max_size"]}), **fixed})
        if encoder is None:
            encoder = build_encoder(meta["encoder"], cfg.device, cfg.batch_size, int(meta["dim"]), cfg.max_seq_length)
        if encoder.name != meta["encoder"] or int(encoder.dim) != int(meta["dim"]):
            raise BufferFileError(f"{d / 'meta.json'}: buffer built with encoder {meta['encoder']!r} (dim {meta['dim']}), "
                                  f"not {encoder.name!r} (dim {encoder.dim}); set replay.encoder={meta['encoder']} "
                                  "or rebuild the buffer")
        if meta.get("encoder_state") is not None and hasattr(encoder, "load_state_dict"):
            encoder.load_state_dict(meta["encoder_state"])     # bm25's fitted IDF: queries weighted as the keys
        buf = cls(encoder, cfg, seed=meta.get("seed", 100))
        buf._index = hnswlib.Index(space="cosine", dim=buf.dim)
        try:
            buf._index.load_index(str(d / "index.bin"), max_elements=0, allow_replace_deleted=True)
        except (RuntimeError, MemoryError, ValueError) as e:
            raise BufferFileError(f"{d / 'index.bin'}: cannot read the hnswlib index: {e}") from None
        with (d / "records.jsonl").open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                try:
                    rec = json.loads(line)
                    label = int(rec.pop("label"))
                    buf._remember(label, Transition.from_dict(rec))
                except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                    raise BufferFileError(f"{d / 'records.jsonl'}:{lineno}: bad record: {e}") from None
        buf._next_label = int(meta["next_label"])
        if len(buf) != meta["counts"]["total"] or buf._index.element_count < len(buf):
            raise BufferFileError(f"{d / 'records.jsonl'}: {len(buf)} records, but meta.json counts "
                                  f"{meta['counts']['total']} and index.bin holds {buf._index.element_count}")
        return buf

    # -- internals ------------------------------------------------------------------------------
    def _encode(self, texts: list[str]) -> np.ndarray:
        t0 = time.perf_counter()
        vecs = self.encoder.encode(texts) if texts else np.zeros((0, self.dim), dtype=np.float32)
        self.stats["encode_s"] += time.perf_counter() - t0
        self.stats["encoded"] += len(texts)
        return np.asarray(vecs, dtype=np.float32).reshape(-1, self.dim)

    def _remember(self, label: int, t: Transition) -> None:
        self._records[label] = t
        self._by_source[t.source][label] = None
        self._by_group.setdefault((t.source, t.env), {})[label] = None
        self._by_traj.setdefault(t.trajectory_id, set()).add(label)
        if self.cfg.dedup:
            self._by_key[_dedup_key(t)] = label

    def _forget(self, label: int) -> None:
        t = self._records.pop(label)
        del self._by_source[t.source][label]
        group = self._by_group[(t.source, t.env)]
        del group[label]
        if not group:
            del self._by_group[(t.source, t.env)]
        traj = self._by_traj[t.trajectory_id]
        traj.discard(label)
        if not traj:
            del self._by_traj[t.trajectory_id]
        if self.cfg.dedup:
            self._by_key.pop(_dedup_key(t), None)

    def _group_of(self, label: int) -> tuple[str, str]:
        t = self._records[label]
        return (t.source, t.env)

    def _exact(self, q: np.ndarray, labels: list[int], k: int) -> list[Hit]:
        if not labels:
            return []
        mat = self._index.get_items(labels)                   # stored rows are unit norm (cosine space)
        sims = np.asarray(mat, dtype=np.float32) @ (q / max(float(np.linalg.norm(q)), 1e-12))
        top = np.argpartition(-sims, k - 1)[:k] if k < len(labels) else np.arange(len(labels))
        top = top[np.lexsort((np.asarray(labels)[top], -sims[top]))]   # ties: older label first
        return [Hit(self._records[labels[i]], float(sims[i]), labels[i]) for i in top]

    def _filtered(self, q: np.ndarray, k: int, groups: set[tuple[str, str]], skip: set[int],
                  n_allowed: int) -> list[Hit]:
        """Top-k among allowed labels. First an unfiltered search for enough extra neighbours to
        survive the filters at their share of the buffer (cheap: no per-node Python callback), then,
        when that leaves fewer than k, hnswlib's filtered search (walks until k allowed are found)."""
        recs = self._records

        def keep(lb: int) -> bool:
            r = recs.get(lb)
            return r is not None and (r.source, r.env) in groups and lb not in skip

        fetch = math.ceil((k + len(skip)) * 2 * len(recs) / n_allowed)
        if fetch <= _OVERFETCH_MAX:
            hits = [h for h in self._hnsw(q[None], min(fetch, len(recs)), None)[0] if keep(h.label)]
            if len(hits) >= k:
                return hits[:k]
        return self._hnsw(q[None], k, keep, fallback=lambda: [lb for g in groups for lb in self._by_group[g]
                                                               if lb not in skip])[0]

    def _hnsw(self, vecs: np.ndarray, k: int, keep, fallback=None) -> list[list[Hit]]:
        self._index.set_ef(max(self.ef_search, k))
        try:
            labels, dists = self._index.knn_query(vecs, k=k, num_threads=1, filter=keep)
        except RuntimeError:                                   # graph walk found < k allowed: go exact
            allowed = fallback() if fallback else list(self._records)
            return [self._exact(q, allowed, k) for q in vecs]
        return [[Hit(self._records[int(lb)], 1.0 - float(dd), int(lb)) for lb, dd in zip(row_l, row_d)]
                for row_l, row_d in zip(labels, dists)]

    def _meta(self, files: dict[str, dict]) -> dict:
        return {"schema": BUFFER_SCHEMA, "kind": "dreamgym-replay-buffer", "encoder": self.encoder.name,
                "dim": self.dim, "space": "cosine", "key_format": "action+state/v1",
                "key_state_chars": self.key_state_chars, "M": self.cfg.M,
                "ef_construction": self.cfg.ef_construction, "ef_search": self.ef_search,
                "max_size": self.cfg.max_size, "dedup": self.cfg.dedup, "seed": self.seed,
                "next_label": self._next_label, "index_elements": self._index.element_count,
                "index_capacity": self._index.max_elements, "counts": self.counts(), "files": files,
                "config": {**self.cfg.__dict__, "ef_search": self.ef_search},
                "encoder_state": self.encoder.state_dict() if hasattr(self.encoder, "state_dict") else None,
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


# -- helpers -----------------------------------------------------------------------------------

def _dedup_key(t: Transition) -> str:
    blob = json.dumps([t.env, t.instruction, t.state, t.action, t.next_state, round(float(t.reward), 6),
                       bool(t.done)], ensure_ascii=False)
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()
