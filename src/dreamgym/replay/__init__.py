"""Replay buffer of transitions (hnswlib over phi(s, a) sentence embeddings), its encoders and files."""

from dreamgym.replay.buffer import Hit, ReplayBuffer
from dreamgym.replay.embed import BM25Encoder, Encoder, EncoderError, HashingEncoder, SentenceEncoder, build_encoder, key_text
from dreamgym.replay.store import BufferFileError, read_meta

__all__ = ["ReplayBuffer", "Hit", "BufferFileError", "read_meta", "Encoder", "EncoderError", "HashingEncoder", "BM25Encoder",
           "SentenceEncoder", "build_encoder", "key_text"]
