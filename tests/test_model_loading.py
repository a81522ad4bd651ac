"""models/loading.py: dtype choice, tiny-random determinism and training, adapters, errors, chat ids,
4-bit (QLoRA) gradients after generate; slow: the embedded SmolLM2-135M converted, loaded and generating."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from dreamgym.config import ConfigError, LoraSettings, ModelConfig, load_config
from dreamgym.errors import DreamGymError
from dreamgym.models.loading import (
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

pytestmark = pytest.mark.filterwarnings("ignore:`(is_)?gradient_checkpointing(_enable)?` is deprecated:FutureWarning")
TINY = ModelConfig(name="tiny-random", device="cpu", dtype="float32")


def _ids(tok) -> torch.Tensor:
    return torch.tensor([chat_prompt_ids(tok, [{"role": "user", "content": "buy a red mug under 20 dollars"}])])


def _grads(model, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    model.train()
    model.zero_grad()
    model(input_ids=ids, labels=ids).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def _randomize_lora_b(model, seed: int = 1) -> None:
    """lora_B starts at 0 (adapter = identity); make it non-zero so adapters change the logits."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)


def test_pick_dtype_exact():
    assert pick_dtype("cpu", cpu_flags={"sse4_2", "avx2", "fma"}) == torch.float32        # AVX2-only: bf16 ~6x slower
    assert pick_dtype("cpu", cpu_flags={"avx2", "avx512f", "avx512_bf16"}) == torch.bfloat16
    assert pick_dtype("cpu", cpu_flags={"avx512f", "amx_tile", "amx_bf16"}) == torch.bfloat16
    assert pick_dtype("cpu", cpu_flags={"avx512f", "avx512_vnni"}) == torch.float32       # AVX512 without bf16
    assert pick_dtype("cpu", cpu_flags=set()) == torch.float32                            # no /proc/cpuinfo
    assert pick_dtype("cuda", cuda_bf16=True) == torch.bfloat16
    assert pick_dtype(torch.device("cuda", 0), cuda_bf16=False) == torch.float16


def test_model_config_validation_names_the_key():
    with pytest.raises(ConfigError, match=r"model\.dtype.*float32"):
        ModelConfig(dtype="fp8")
    with pytest.raises(ConfigError, match=r"model\.quantization.*nf4"):
        ModelConfig(quantization="int8")
    with pytest.raises(ConfigError, match=r"model\.lora\.dropout"):
        LoraSettings(dropout=1.0)
    cfg = load_config(ModelConfig, overrides=["name=tiny-random", "lora.r=4", "lora.target_modules=[q_proj]"])
    assert (cfg.name, cfg.lora.r, cfg.lora.target_modules) == ("tiny-random", 4, ["q_proj"])


def test_tiny_random_is_deterministic_for_a_seed():
    rng_before = torch.get_rng_state()
    a, tok = load_model(TINY)
    b, _ = load_model(TINY)
    c, _ = load_model(ModelConfig(name="tiny-random", device="cpu", dtype="float32", seed=1))
    assert torch.equal(torch.get_rng_state(), rng_before), "building tiny-random must not move the global RNG"
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    assert not torch.equal(a.model.embed_tokens.weight, c.model.embed_tokens.weight)
    cfg = a.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size) == (2, 32, 4, 64)
    assert cfg.vocab_size == len(tok) == 49152 and a.dtype == torch.float32
    assert not a.training and not any(p.requires_grad for p in a.parameters())


def test_one_lora_step_moves_lora_b_and_not_the_base():
    model, tok = load_model(TINY, for_training=True)
    assert model.training
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable} == set(TINY.lora.target_modules)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    ids = _ids(tok)
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    for n, p in model.named_parameters():
        if "lora_B" in n:
            assert not torch.equal(before[n], p), f"{n} did not change after one update"
        elif "lora_" not in n:
            torch.testing.assert_close(before[n], p, rtol=0, atol=0, msg=f"frozen base weight {n} changed")


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    plain, tok = load_model(TINY, for_training=True)
    torch.manual_seed(0)
    ckpt, _ = load_model(ModelConfig(name="tiny-random", device="cpu", dtype="float32", gradient_checkpointing=True),
                         for_training=True)
    assert ckpt.base_model.model.is_activation_checkpointing
    for model in (plain, ckpt):
        _randomize_lora_b(model)
    g1, g2 = _grads(plain, _ids(tok)), _grads(ckpt, _ids(tok))
    assert g1.keys() == g2.keys()
    for n in g1:
        torch.testing.assert_close(g1[n], g2[n], msg=n)


def test_adapter_round_trip_gives_identical_logits(tmp_path):
    torch.manual_seed(0)
    model, tok = load_model(TINY, for_training=True)
    _randomize_lora_b(model)
    ids = _ids(tok)
    model.eval()
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        base_logits = load_model(TINY)[0](input_ids=ids).logits
    assert not torch.allclose(expected, base_logits), "the adapter should change the logits"
    out = save_adapter(model, tmp_path / "adapter")
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in out.iterdir()}
    assert not list(tmp_path.glob(".adapter.tmp-*")), "temp folder left behind"
    save_adapter(model, out)  # overwriting an existing adapter replaces it whole
    (tmp_path / "summary.json").write_text(json.dumps({"adapter_dir": "adapter"}))  # a run dir
    loaded, _ = load_adapter(TINY, tmp_path)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, expected, rtol=0, atol=0)
    resumed, _ = load_adapter(TINY, out, for_training=True)
    assert resumed.training and any(p.requires_grad for n, p in resumed.named_parameters() if "lora_B" in n)


def test_resolve_adapter_dir_errors_name_the_path(tmp_path):
    with pytest.raises(DreamGymError, match="no adapter_config.json"):
        resolve_adapter_dir(tmp_path)
    (tmp_path / "summary.json").write_text(json.dumps({"adapter_dir": "missing"}))
    with pytest.raises(DreamGymError, match=r"summary\.json: key 'adapter_dir' names 'missing'"):
        resolve_adapter_dir(tmp_path)


@pytest.mark.parametrize("name", ["/nonexistent/dreamgym-model", "./no-such-folder", "nobody-xyz/no-such-model"])
def test_bad_model_name_error_names_the_key_and_the_path(name):
    with pytest.raises(DreamGymError, match=r"model\.name") as err:
        load_model(ModelConfig(name=name, device="cpu"))
    assert name.lstrip("./") in str(err.value)


def test_bad_lora_target_names_the_key():
    model, _ = load_model(TINY)
    with pytest.raises(DreamGymError, match=r"model\.lora\.target_modules.*qkv"):
        apply_lora(model, LoraSettings(target_modules=["qkv"]))


def test_chat_prompt_ids_end_with_the_assistant_generation_prompt():
    tok = load_tokenizer(TINY)
    messages = [{"role": "system", "content": "You are a shopper."}, {"role": "user", "content": "find a mug"}]
    ids = chat_prompt_ids(tok, messages)
    assert all(isinstance(i, int) for i in ids)
    text = tok.decode(ids)
    assert text.startswith("<|im_start|>system\nYou are a shopper.<|im_end|>")
    assert text.endswith("<|im_start|>user\nfind a mug<|im_end|>\n<|im_start|>assistant\n")
    bare = chat_prompt_ids(tok, messages, add_generation_prompt=False)
    assert ids[: len(bare)] == bare and tok.decode(ids[len(bare):]) == "<|im_start|>assistant\n"
    assert tok.padding_side == "left" and tok.pad_token_id == tok.eos_token_id == 2


def test_cache_root_and_atomic_cache_writes(tmp_path, monkeypatch):
    from dreamgym.models.model_cache import atomic_dir, cache_root

    monkeypatch.setenv("DREAMGYM_CACHE", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env" and cache_root(str(tmp_path / "cfg")) == tmp_path / "cfg"
    stale = tmp_path / ".m.tmp-999-deadbeef"  # left by a writer killed mid-conversion
    stale.mkdir()
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_dir(tmp_path / "m", replace_existing=False) as tmp:
            (tmp / "model.safetensors").write_text("half")
            raise RuntimeError("killed")
    assert not (tmp_path / "m").exists() and not list(tmp_path.glob(".m.tmp-*"))
    with atomic_dir(tmp_path / "m", replace_existing=False) as tmp:
        (tmp / "dreamgym_meta.json").write_text("{}")
    assert (tmp_path / "m" / "dreamgym_meta.json").is_file()
    with atomic_dir(tmp_path / "m", replace_existing=False) as tmp:
        assert tmp is None, "a complete folder is never rebuilt"


def _bnb_4bit_on_cpu() -> str | None:
    """None when bitsandbytes runs a 4-bit NF4 layer on this CPU, else why not."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return "bitsandbytes is not installed"
    try:
        from bitsandbytes.nn import Linear4bit

        layer = Linear4bit(64, 64, compute_dtype=torch.float32, quant_type="nf4").to("cpu")
        layer(torch.randn(2, 64))
    except Exception as e:  # noqa: BLE001 - any failure means: no 4-bit here
        return f"bitsandbytes 4-bit NF4 does not run on this CPU: {type(e).__name__}: {e}"
    return None


@pytest.mark.slow  # ~15 s: importing bitsandbytes and quantizing twice
def test_nf4_lora_gradients_after_generate_match_a_fresh_load():
    """Regression for 'a 4-bit model that ran generate in eval mode gave wrong LoRA gradients until
    reloaded' (bitsandbytes repacks 4-bit weights for its AVX512_BF16 CPU kernel, outside autograd)."""
    reason = _bnb_4bit_on_cpu()
    if reason:
        pytest.skip(reason)
    cfg = ModelConfig(name="tiny-random", device="cpu", dtype="float32", quantization="nf4")
    torch.manual_seed(0)
    used, tok = load_model(cfg, for_training=True)
    from bitsandbytes.nn import Linear4bit

    four_bit = [m for m in used.modules() if isinstance(m, Linear4bit)]
    assert len(four_bit) == 2 * 7 and not any(m.support_avx512bf16_for_cpu for m in four_bit)
    _randomize_lora_b(used)
    ids = _ids(tok)
    used.eval()
    with torch.no_grad():
        used.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False)
    assert not any(getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in four_bit)
    torch.manual_seed(0)
    fresh, _ = load_model(cfg, for_training=True)
    _randomize_lora_b(fresh)
    g_used, g_fresh = _grads(used, ids), _grads(fresh, ids)
    assert g_used.keys() == g_fresh.keys() and len(g_used) == 2 * 7 * 2
    for n in g_used:
        torch.testing.assert_close(g_used[n], g_fresh[n], rtol=0, atol=0, msg=n)


@pytest.mark.slow  # first run converts the GGUF (~45 s), later runs load the cached folder (~2 s)
def test_embedded_smollm2_converts_loads_and_generates():
    folder = embedded_model_path()
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= {
        p.name for p in folder.iterdir()}
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["num_hidden_layers"] == 30
    model, tok = load_model(ModelConfig(device="cpu", dtype="float32"))
    ids = torch.tensor([chat_prompt_ids(tok, [{"role": "user", "content": "What is the capital of France?"}])])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False)
    answer = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer


class _WrappedLayer(torch.nn.Module):
    """Stands in for an FSDP unit: the layer sits under `_fsdp_wrapped_module`, as FSDP names it."""

    def __init__(self, layer):
        super().__init__()
        self._fsdp_wrapped_module = layer

    def forward(self, *args, **kwargs):
        return self._fsdp_wrapped_module(*args, **kwargs)


def test_adapter_from_a_gathered_state_dict_equals_peft_save_under_fsdp_names(tmp_path):
    """FSDP's gathered state dict has clean keys while the model's module names carry
    `_fsdp_wrapped_module.` (peft then kept no key: an empty adapter on an H100); save_adapter(state_dict=)
    writes the same files as peft's own save of the unwrapped model."""
    from safetensors.torch import load_file

    torch.manual_seed(0)
    model, _ = load_model(TINY, for_training=True)
    _randomize_lora_b(model)
    save_adapter(model, tmp_path / "reference")
    gathered = {k: v.clone() for k, v in model.state_dict().items()}  # base weights too, as FSDP gathers them
    layers = model.base_model.model.model.layers
    for i in range(len(layers)):
        layers[i] = _WrappedLayer(layers[i])
    assert any("_fsdp_wrapped_module" in n for n, _ in model.named_modules())
    save_adapter(model, tmp_path / "gathered", state_dict=gathered)
    ref = load_file(str(tmp_path / "reference" / "adapter_model.safetensors"))
    got = load_file(str(tmp_path / "gathered" / "adapter_model.safetensors"))
    assert sorted(got) == sorted(ref) and len(ref) == sum("lora_" in k for k in gathered)
    for k in ref:
        assert torch.equal(got[k], ref[k]), k
    def config(name):  # peft writes target_modules from a set: its order follows the string hash seed
        c = json.loads((tmp_path / name / "adapter_config.json").read_text())
        return {**c, "target_modules": sorted(c["target_modules"])}

    assert config("gathered") == config("reference")
    with pytest.raises(DreamGymError, match="no LoRA weights of adapter 'default'"):
        save_adapter(model, tmp_path / "empty", state_dict={k: v for k, v in gathered.items() if "lora_" not in k})
