"""Replay buffer of transitions (hnswlib over phi(s, a) sentence embeddings) and its encoders."""

from dreamgym.replay.buffer import BufferFileError, Hit, ReplayBuffer, read_meta
from dreamgym.replay.embed import Encoder, EncoderError, HashingEncoder, SentenceEncoder, build_encoder, key_text

__all__ = ["ReplayBuffer", "Hit", "BufferFileError", "read_meta", "Encoder", "EncoderError", "HashingEncoder",
           "SentenceEncoder", "build_encoder", "key_text"]
