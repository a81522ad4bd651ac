"""Language models: loading (embedded SmolLM2-135M, tiny-random, any local/HF-cache model), dtype and
device choice, LoRA/QLoRA adapters and chat-template ids (`models/loading.py`; the converted-model cache in
`models/model_cache.py`). Generation: `models/generation.py` over the KV engine (`engine.py`, `kv_slots.py`,
`padded_decode.py`, `decoder.py`, `sampling.py`)."""

from dreamgym.models.loading import (
    EMBEDDED_NAME,
    TINY_RANDOM,
    apply_lora,
    chat_prompt_ids,
    embedded_model_path,
    load_adapter,
    load_model,
    load_tokenizer,
    pick_dtype,
    resolve_adapter_dir,
    save_adapter,
)

__all__ = ["EMBEDDED_NAME", "TINY_RANDOM", "apply_lora", "chat_prompt_ids", "embedded_model_path", "load_adapter",
           "load_model", "load_tokenizer", "pick_dtype", "resolve_adapter_dir", "save_adapter"]
