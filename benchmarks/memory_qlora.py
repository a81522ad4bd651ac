"""Peak GPU memory of DreamGym's single-GPU shape: an 8B-shaped 4-bit (NF4, bf16 compute) LoRA experience
model and a 3B-shaped bf16 LoRA policy resident together, each training a few steps (GPU only).

Weights are random (the real architectures' configs, no hub access), built without ever holding a full
bf16 8B model: the experience model is a meta-device skeleton materialised one decoder layer at a time
on the GPU in bf16, whose projections are then swapped for bitsandbytes `Linear4bit` (NF4, double
quantization, bf16 compute; the bf16 copy is freed before the next layer). Embeddings, norms and
lm_head stay bf16, as in a QLoRA load. The policy is built directly on the GPU in bf16. Both get LoRA
(r 16, every attention and MLP projection: `LoraSettings()` defaults) through peft.

Phases (peak = `torch.cuda.max_memory_allocated`, reset at each phase start; resident = allocated at
the end): build 8B NF4, build 3B bf16, LoRA both, experience-model SFT steps (`ExperienceModel.loss`:
logits only at the labelled positions, gradient checkpointing), experience-model generation (the
synthetic env's job, KV cache included), policy steps (PPO clipped loss with a reference forward
through the disabled adapter, gradient checkpointing). The total is the largest phase peak.

    python benchmarks/memory_qlora.py                    # defaults: SFT 4 x 2048, policy 8 x 2048
    python benchmarks/memory_qlora.py --policy-shape qwen2.5-3b --policy-batch 16

bitsandbytes must be importable (pip install bitsandbytes==0.50.2; one py3-none manylinux_2_24_x86_64
wheel of ~43 MB serves every CUDA version). The last line reads `fits on 80 GB: yes|no (peak N.N GiB)`.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from contextlib import contextmanager
from typing import Any, Iterator

import torch

__all__ = ["SHAPES", "make_config", "param_count", "nf4_bytes", "fits", "sft_batch", "build_nf4_model",
           "build_bf16_model", "run", "main"]

GiB = 1024 ** 3
SHAPES: dict[str, dict[str, Any]] = {
    "llama3-8b": dict(model_type="llama", hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8, intermediate_size=14336, vocab_size=128256, rope_theta=500000.0,
                      max_position_embeddings=8192, rms_norm_eps=1e-5, tie_word_embeddings=False),
    "llama3.2-3b": dict(model_type="llama", hidden_size=3072, num_hidden_layers=28, num_attention_heads=24,
                        num_key_value_heads=8, intermediate_size=8192, vocab_size=128256, rope_theta=500000.0,
                        max_position_embeddings=8192, rms_norm_eps=1e-5, tie_word_embeddings=True),
    "qwen2.5-1.5b": dict(model_type="qwen2", hidden_size=1536, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, intermediate_size=8960, vocab_size=151936, rope_theta=1e6,
                         max_position_embeddings=32768, rms_norm_eps=1e-6, tie_word_embeddings=True),
    "qwen2.5-3b": dict(model_type="qwen2", hidden_size=2048, num_hidden_layers=36, num_attention_heads=16,
                       num_key_value_heads=2, intermediate_size=11008, vocab_size=151936, rope_theta=1e6,
                       max_position_embeddings=32768, rms_norm_eps=1e-6, tie_word_embeddings=True),
}
"""architecture configs (hub config.json values) of the real models the benchmark's shapes copy"""
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def make_config(shape: str, **overrides: Any) -> Any:
    """A transformers config (LlamaConfig / Qwen2Config) of a named shape, with overrides (tests: tiny)."""
    from transformers import LlamaConfig, Qwen2Config

    spec = {**SHAPES[shape], **overrides}
    cls = {"llama": LlamaConfig, "qwen2": Qwen2Config}[spec.pop("model_type")]
    return cls(**spec)


def param_count(cfg: Any) -> dict[str, int]:
    """Parameters by kind: 'projections' (what 4-bit quantizes), 'embeddings' (input + untied lm_head), 'norms'."""
    h, i, n = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    kv = cfg.num_key_value_heads * (h // cfg.num_attention_heads)
    bias = (2 * kv + h) if getattr(cfg, "model_type", "") == "qwen2" else 0  # qwen2: q/k/v biases
    proj = n * (2 * h * h + 2 * h * kv + 3 * h * i)
    emb = cfg.vocab_size * h * (1 if cfg.tie_word_embeddings else 2)
    return {"projections": proj, "embeddings": emb, "norms": n * (2 * h + bias) + h}


def nf4_bytes(cfg: Any, blocksize: int = 64) -> int:
    """Bytes of the experience model as built here: NF4 projections (0.5 byte/param + double-quantized
    absmax: 1 byte per block + fp32 per 256 blocks) and bf16 embeddings and norms."""
    p = param_count(cfg)
    blocks = p["projections"] // blocksize
    return p["projections"] // 2 + blocks + 4 * (blocks // 256) + 2 * (p["embeddings"] + p["norms"])


def fits(peak_reserved_bytes: int, capacity_gb: float = 80.0, context_gib: float = 0.6) -> bool:
    """True when the peak reserved memory plus the CUDA context fits `capacity_gb` (decimal GB, as sold)."""
    return peak_reserved_bytes + context_gib * GiB <= capacity_gb * 1e9


def sft_batch(batch: int, seq_len: int, target_len: int, vocab: int, device: Any = "cpu", seed: int = 0) -> dict:
    """An `ExperienceModel.loss` batch: random ids, the last `target_len` tokens of each row labelled as
    next-state tokens (PART_STATE), the rest prompt (-100). Tensors (B, T)."""
    from dreamgym.experience.sft_data import PART_NONE, PART_STATE

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, seq_len), generator=g)
    labels = torch.full_like(ids, -100)
    parts = torch.full_like(ids, PART_NONE)
    labels[:, seq_len - target_len:] = ids[:, seq_len - target_len:]
    parts[:, seq_len - target_len:] = PART_STATE
    out = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels, "parts": parts}
    return {k: v.to(device) for k, v in out.items()}


def build_nf4_model(cfg: Any, device: Any, compute_dtype: torch.dtype = torch.bfloat16) -> Any:
    """A causal LM of `cfg` with NF4 `Linear4bit` projections, built layer by layer on `device` (random
    init, std `initializer_range`); only one layer's bf16 weights exist at a time."""
    import bitsandbytes as bnb
    from transformers import AutoModelForCausalLM

    device = torch.device(device)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    std = cfg.initializer_range
    for name, module in list(model.named_modules()):
        leaf = name.rsplit(".", 1)[-1]
        if isinstance(module, torch.nn.Linear) and leaf in PROJECTIONS:
            w = torch.empty(module.out_features, module.in_features, device=device, dtype=compute_dtype).normal_(0, std)
            q = bnb.nn.Linear4bit(module.in_features, module.out_features, bias=module.bias is not None,
                                  compute_dtype=compute_dtype, compress_statistics=True, quant_type="nf4",
                                  device="meta")
            q.weight = bnb.nn.Params4bit(w, requires_grad=False, compress_statistics=True, quant_type="nf4",
                                         module=q).to(device)
            if module.bias is not None:
                q.bias = torch.nn.Parameter(torch.zeros(module.out_features, device=device, dtype=compute_dtype),
                                            requires_grad=False)
            parent = model.get_submodule(name.rsplit(".", 1)[0])
            setattr(parent, leaf, q)
            del w
    _materialize_rest(model, device, compute_dtype, std)
    model.requires_grad_(False)
    return model


def build_bf16_model(cfg: Any, device: Any, dtype: torch.dtype = torch.bfloat16) -> Any:
    """A causal LM of `cfg` created directly on `device` in `dtype` (no float32 copy on the way)."""
    from transformers import AutoModelForCausalLM

    with _default_dtype(dtype), torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg)
    return model.requires_grad_(False)


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experience-shape", default="llama3-8b", choices=sorted(SHAPES))
    ap.add_argument("--policy-shape", default="llama3.2-3b", choices=sorted(SHAPES))
    ap.add_argument("--sft-batch", type=int, default=4, help="experience-model SFT micro-batch")
    ap.add_argument("--sft-seq", type=int, default=2048, help="SFT sequence length (prompt + target)")
    ap.add_argument("--sft-target", type=int, default=384, help="labelled target tokens per SFT example")
    ap.add_argument("--gen-batch", type=int, default=16, help="experience-model generation batch")
    ap.add_argument("--gen-prompt", type=int, default=1536, help="generation prompt tokens")
    ap.add_argument("--gen-new", type=int, default=64, help="generated tokens")
    ap.add_argument("--policy-batch", type=int, default=8, help="policy PPO micro-batch")
    ap.add_argument("--policy-seq", type=int, default=2048, help="policy sequence length (rollout episode)")
    ap.add_argument("--steps", type=int, default=3, help="optimizer steps per training phase")
    ap.add_argument("--no-grad-ckpt", action="store_true", help="train without gradient checkpointing")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("memory_qlora.py measures GPU memory and needs CUDA (torch.cuda.is_available() is False here); "
                 "run it on a GPU machine, e.g. `python benchmarks/memory_qlora.py` on the H100")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        sys.exit("memory_qlora.py needs bitsandbytes for NF4: pip install bitsandbytes==0.50.2 "
                 "(bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl, ~43 MB)")
    return run(args)


def run(args: argparse.Namespace, device: str = "cuda", shape_overrides: dict | None = None) -> dict[str, float]:
    """All phases on `device`; `shape_overrides` shrink both configs (the CPU smoke test: memory reads 0)."""
    return _run(args, torch.device(device), shape_overrides or {})


# -- internals ---------------------------------------------------------------------------------

def _run(args: argparse.Namespace, dev: torch.device, overrides: dict) -> dict[str, float]:
    from dreamgym.config import FitWorldModelConfig
    from dreamgym.experience.module import ExperienceModel
    from dreamgym.models.loading import apply_lora
    from dreamgym.rl.losses import clipped_pg_loss, kl_penalty

    torch.manual_seed(0)
    cuda = dev.type == "cuda"
    rows: list[tuple[str, float, float, float]] = []
    _TIMES.clear()
    wcfg, pcfg = make_config(args.experience_shape, **overrides), make_config(args.policy_shape, **overrides)
    where = f"{torch.cuda.get_device_name()} ({torch.cuda.get_device_properties(dev).total_memory / GiB:.1f} GiB)" \
        if cuda else "cpu (smoke run: memory not measured)"
    print(f"# memory benchmark: {where}; experience {args.experience_shape} NF4 (est. {nf4_bytes(wcfg) / GiB:.2f} GiB), policy "
          f"{args.policy_shape} bf16 ({sum(param_count(pcfg).values()) / 1e9:.2f}B params); gradient checkpointing "
          f"{'off' if args.no_grad_ckpt else 'on'}")

    phase = functools.partial(_phase, rows=rows, cuda=cuda)
    with phase("build experience model (8B NF4)"):
        world = build_nf4_model(wcfg, dev, torch.bfloat16 if cuda else torch.float32)
    with phase("build policy (3B bf16)"):
        policy = build_bf16_model(pcfg, dev, torch.bfloat16 if cuda else torch.float32)
    with phase("LoRA adapters on both"):
        wm_cfg = FitWorldModelConfig()
        world, policy = apply_lora(world, wm_cfg.model), apply_lora(policy, wm_cfg.model)
        for m in (world, policy):
            if not args.no_grad_ckpt:
                m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            m.enable_input_require_grads()
            m.train()
        module = ExperienceModel(wm_cfg, model=world, tokenizer=None).to(dev)
        opt_w = torch.optim.AdamW([p for p in world.parameters() if p.requires_grad], lr=1e-4)
        opt_p = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-6)
    with phase(f"experience SFT x{args.steps} ({args.sft_batch} x {args.sft_seq})"):
        batch = sft_batch(args.sft_batch, args.sft_seq, args.sft_target, wcfg.vocab_size, dev)
        for _ in range(args.steps):
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
                loss, _ = module.loss(batch)
            loss.backward()
            opt_w.step()
            opt_w.zero_grad(set_to_none=True)
    with phase(f"experience generate ({args.gen_batch} x {args.gen_prompt} + {args.gen_new})"):
        world.eval()
        ids = torch.randint(0, wcfg.vocab_size, (args.gen_batch, args.gen_prompt), device=dev)
        with torch.no_grad():
            world.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.gen_new,
                           min_new_tokens=args.gen_new, do_sample=False, pad_token_id=0)
        world.train()
        del ids
    with phase(f"policy PPO x{args.steps} ({args.policy_batch} x {args.policy_seq})"):
        ids = torch.randint(0, pcfg.vocab_size, (args.policy_batch, args.policy_seq), device=dev)
        mask = torch.zeros_like(ids, dtype=torch.float32)
        mask[:, args.policy_seq // 2:] = 1.0
        adv = torch.randn(args.policy_batch, args.policy_seq - 1, device=dev)
        for _ in range(args.steps):
            with torch.no_grad(), policy.disable_adapter(), torch.autocast(dev.type, torch.bfloat16, enabled=cuda):
                ref = _token_logprobs(policy, ids)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
                logp = _token_logprobs(policy, ids)
            m = mask[:, 1:]
            pg, _ = clipped_pg_loss(logp, logp.detach(), adv, m, 0.2)
            kl, _ = kl_penalty(logp, ref, m)
            loss = pg + 0.01 * kl
            loss.backward()
            opt_p.step()
            opt_p.zero_grad(set_to_none=True)
    peak = max(r[1] for r in rows)
    peak_reserved = max(r[3] for r in rows)
    print(f"{'phase':<44} {'peak GiB':>9} {'resident GiB':>12} {'reserved GiB':>12} {'s':>6}")
    for name, p, resident, reserved, secs in ((*r, t) for r, t in zip(rows, _TIMES)):
        print(f"{name:<44} {p:>9.2f} {resident:>12.2f} {reserved:>12.2f} {secs:>6.1f}")
    print(f"{'total (largest phase peak)':<44} {peak:>9.2f} {'':>12} {peak_reserved:>12.2f}")
    ok = fits(int(peak_reserved * GiB))
    print(f"fits on 80 GB: {'yes' if ok else 'no'} (peak {peak:.1f} GiB allocated, {peak_reserved:.1f} GiB reserved)")
    return {"peak_gib": peak, "peak_reserved_gib": peak_reserved, "fits": float(ok)}


_TIMES: list[float] = []


@contextmanager
def _phase(name: str, rows: list, cuda: bool = True) -> Iterator[None]:
    """Record (name, peak GiB, resident GiB, peak reserved GiB) of the block (zeros off CUDA); its
    seconds go to _TIMES."""
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    yield
    if cuda:
        torch.cuda.synchronize()
    _TIMES.append(time.perf_counter() - t0)
    mem = (torch.cuda.max_memory_allocated(), torch.cuda.memory_allocated(), torch.cuda.max_memory_reserved()) \
        if cuda else (0, 0, 0)
    rows.append((name, *(m / GiB for m in mem)))
    print(f"  done: {name} ({_TIMES[-1]:.1f} s, peak {rows[-1][1]:.2f} GiB)", flush=True)


def _token_logprobs(model: Any, ids: torch.Tensor) -> torch.Tensor:
    """log p(ids[:, t+1] | ids[:, :t+1]) per position, (B, T-1), in fp32."""
    logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
    return torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)


def _materialize_rest(model: Any, device: torch.device, dtype: torch.dtype, std: float) -> None:
    """Every parameter/buffer still on meta -> `device` (embeddings/lm_head random, norms 1, biases 0);
    rotary buffers are recomputed by re-running their init on `device`."""
    for name, p in list(model.named_parameters()):
        if p.device.type != "meta":
            continue
        owner, leaf = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model, name.rsplit(".", 1)[-1]
        t = torch.empty(p.shape, device=device, dtype=dtype)
        t = t.fill_(1.0) if "norm" in name else t.zero_() if leaf == "bias" else t.normal_(0, std)
        setattr(owner, leaf, torch.nn.Parameter(t, requires_grad=False))
    if getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()
    for name, module in model.named_modules():
        if hasattr(module, "inv_freq") and module.inv_freq.device.type == "meta":
            with torch.device(device):
                fresh = type(module)(config=model.config)
            module.to_empty(device=device)
            for key, buf in fresh.named_buffers(recurse=False):
                setattr(module, key, buf)


@contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


if __name__ == "__main__":
    main()
