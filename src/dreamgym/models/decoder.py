"""One forward pass of a Llama-family decoder (Llama, SmolLM2, Qwen2, Qwen3, Mistral without sliding window)
written out over the HF modules, with attention delegated to the caller, so `models/engine.py` can own the KV
cache layout. The modules are called as they are: peft's LoRA layers inside them apply (or not, under
`disable_adapter()`) exactly as in the HF forward. A layer is two functions around the caller's attention,
`layer_qkv` (norm, projections, rotary) and `layer_out` (output projection, residuals, MLP), so the engine
can compile them (regional compilation: one compiled graph serves every layer of the model) while the KV
cache writes stay outside compiled code. Also: grouped-query attention that never expands K/V, and on CUDA
its single-query (decode) case as plain matmuls.

Kernel count matters here, not only arithmetic: a GPU decode step replayed from a CUDA graph was measured
bound by its ~1,400 small kernels (benchmarks/RESULTS.md). So the eager layer uses fewer ops than the HF
modules for the same math: RMSNorm through `F.rms_norm` (ATen's `_fused_rms_norm`, one kernel on CUDA, instead of
~8), rotary positions as `q * cos + roll(q) * sin_signed` (3 ops instead of 5 per tensor), and an unmerged
peft LoRA projection as `addmm(base(x), A(x), B^T, alpha=scaling)` (the B matmul, scaling and add in one
op). Anything these fast paths do not recognise runs through the module itself."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

__all__ = ["SUPPORTED_MODEL_TYPES", "supports", "core_model", "decoder_forward", "layer_qkv", "layer_out",
           "grouped_attention", "matmul_attention", "additive_mask", "rms_norm", "project", "mlp", "rotate",
           "signed_sin"]

SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "qwen3", "mistral")


def supports(model: Any) -> bool:
    """True for decoders the engine runs natively (else callers use HF `generate`)."""
    core = core_model(model)
    cfg = getattr(core, "config", None)
    if cfg is None or getattr(cfg, "model_type", None) not in SUPPORTED_MODEL_TYPES:
        return False
    if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True) \
            and cfg.model_type == "mistral":
        return False
    inner = getattr(core, "model", None)
    return all(hasattr(inner, a) for a in ("embed_tokens", "layers", "norm", "rotary_emb")) and hasattr(core, "lm_head")


def decoder_forward(core: Any, ids: torch.Tensor, pos: torch.Tensor, attend, qkv=None, out=None) -> torch.Tensor:
    """The decoder body of a Llama-family causal LM over (b, T) ids at positions `pos` (b, T): embeddings,
    rotary positions, every layer with its attention delegated to `attend(layer, q, k, v)` ((b, H, T, D) q,
    (b, Hkv, T, D) k and v; returns (b, H, T, D)); the final norm and LM head are the caller's. `qkv`/`out`
    replace `layer_qkv`/`layer_out` (e.g. their torch.compile'd versions)."""
    qkv, out = qkv or layer_qkv, out or layer_out
    c = core.config
    n_heads = c.num_attention_heads
    n_kv = getattr(c, "num_key_value_heads", None) or n_heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // n_heads
    m = core.model
    h = m.embed_tokens(ids)
    cos, sin = m.rotary_emb(h, pos)
    cos, sin = cos[:, None], signed_sin(sin[:, None])  # (b, 1, T, D)
    for li, layer in enumerate(m.layers):
        q, k, v = qkv(layer, h, cos, sin, n_heads, n_kv, head_dim)
        h = out(layer, h, attend(li, q, k, v))
    return h


def layer_qkv(layer: Any, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, n_heads: int, n_kv: int,
              head_dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A layer's attention inputs from the residual stream h (b, T, hidden): input norm, q/k/v projections,
    the q/k norms where the architecture has them (Qwen3), rotary positions (`sin` as `signed_sin` gives it).
    Returns (b, H|Hkv, T, D) each."""
    b, T = h.shape[0], h.shape[1]
    attn = layer.self_attn
    x = rms_norm(layer.input_layernorm, h)
    casts: dict = {}  # x cast once for the adapters of q, k and v
    q = project(attn.q_proj, x, casts).view(b, T, n_heads, head_dim)
    k = project(attn.k_proj, x, casts).view(b, T, n_kv, head_dim)
    v = project(attn.v_proj, x, casts).view(b, T, n_kv, head_dim).transpose(1, 2)
    if hasattr(attn, "q_norm"):
        q, k = rms_norm(attn.q_norm, q), rms_norm(attn.k_norm, k)
    q, k = q.transpose(1, 2), k.transpose(1, 2)
    return rotate(q, cos, sin), rotate(k, cos, sin), v


def layer_out(layer: Any, h: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    """The residual stream after a layer, from its input h (b, T, hidden) and attention output o (b, H, T, D)."""
    b, H, T, D = o.shape
    h = h + project(layer.self_attn.o_proj, o.transpose(1, 2).reshape(b, T, H * D))
    return h + mlp(layer.mlp, rms_norm(layer.post_attention_layernorm, h))


def mlp(module: Any, x: torch.Tensor) -> torch.Tensor:
    """A gated MLP, down(act(gate(x)) * up(x)), with LoRA-aware projections (else the module's own forward)."""
    if not all(hasattr(module, a) for a in ("gate_proj", "up_proj", "down_proj", "act_fn")):
        return module(x)
    casts: dict = {}
    gate, up = project(module.gate_proj, x, casts), project(module.up_proj, x, casts)
    return project(module.down_proj, module.act_fn(gate) * up)


_HF_RMS_NORMS = ("LlamaRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm", "MistralRMSNorm")


def rms_norm(module: Any, x: torch.Tensor) -> torch.Tensor:
    """An HF RMSNorm module applied as `F.rms_norm` (float32 statistics, as HF computes them; HF rounds to the
    input dtype before the weight, this rounds once after it: equal in float32, within one ulp in bf16). On
    CUDA that is one fused kernel; unknown norm classes or a weight dtype other than x's run the module."""
    w, eps = getattr(module, "weight", None), getattr(module, "variance_epsilon", None)
    if type(module).__name__ not in _HF_RMS_NORMS or w is None or eps is None or w.dtype != x.dtype:
        return module(x)
    return F.rms_norm(x, (x.shape[-1],), w, eps)


def project(module: Any, x: torch.Tensor, casts: dict | None = None) -> torch.Tensor:
    """`module(x)` for a projection. An unmerged, enabled peft LoRA layer (plain LoRA, no dropout at run time,
    no LoRA bias) is computed as base(x) + scaling * (x A^T) B^T with fewer ops than peft's forward:
    - x, the adapter and the base output in one dtype: the B matmul, scaling and add are one `addmm` (3 ops
      with the base matmul, instead of 5);
    - a float32 adapter on a bf16 base (peft's default upcast): the scaled add is in place, in float32 and
      rounded once to the base's dtype as peft's `Linear` rounds it (its bnb 4-bit layer rounds the LoRA term
      to bf16 before the add: within an ulp); 5 ops instead of 7, 4 when projections of the same input share
      `casts` (x's casts by dtype)."""
    adapters = _plain_lora_adapters(module)
    if adapters is None:
        return module(x)
    out = module.base_layer(x)
    flat, x2 = out.reshape(-1, out.shape[-1]), x.reshape(-1, x.shape[-1])
    casts = {} if casts is None else casts
    for name in adapters:
        a, b, scale = module.lora_A[name].weight, module.lora_B[name].weight, module.scaling[name]
        if a.dtype not in casts:
            casts[a.dtype] = x2.to(a.dtype)
        xa = F.linear(casts[a.dtype], a)
        if flat.dtype == a.dtype == b.dtype:
            flat = torch.addmm(flat, xa, b.t(), alpha=scale)
        else:
            flat = flat.add_(F.linear(xa, b), alpha=scale)
    return flat.view(out.shape)


def _plain_lora_adapters(module: Any) -> list[str] | None:
    """The active adapters of a peft LoRA layer that `project` may compute itself, or None (run the module)."""
    if not hasattr(module, "lora_A") or not hasattr(module, "base_layer") or module.disable_adapters or module.merged:
        return None
    names = [n for n in module.active_adapters if n in module.lora_A]
    for n in names:
        b, drop = module.lora_B[n], module.lora_dropout[n]
        if n in getattr(module, "lora_variant", {}) or b.bias is not None:
            return None
        if not (isinstance(drop, torch.nn.Identity) or not drop.training or drop.p == 0):
            return None
    return names


def signed_sin(sin: torch.Tensor) -> torch.Tensor:
    """HF's rotary `sin` with its first half negated: `rotate_half(x) * sin == roll(x, D/2) * signed_sin`."""
    half = sin.shape[-1] // 2
    return torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
    """Rotary positions, HF's `x * cos + rotate_half(x) * sin`, as 3 ops: a multiply, a roll and an addcmul."""
    return torch.addcmul(x * cos, torch.roll(x, x.shape[-1] // 2, dims=-1), sin_signed)


def core_model(model: Any) -> Any:
    """The causal LM under a peft wrapper (its modules carry the LoRA layers)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def grouped_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Attention of q (b, H, T, D) over k, v (b, Hkv, L, D) with a boolean mask (b, 1, T, L) (or, for the
    CUDA decode case, its float32 `additive_mask`). Grouped-query
    heads are folded into the query length, (b, Hkv, G*T, D), so K/V are never expanded to H heads (the
    kernels' own GQA support may copy K/V over the whole cache each step). On CUDA a single-query step
    (decode) runs as `matmul_attention`: measured on an H100 (bf16, 12 query / 2 KV heads of 128, one layer
    call inside a CUDA graph), SDPA's memory-efficient kernel took 63 / 66 / 82 us at b = 1 / 16 / 64 over
    1,536 cached positions against 22 / 31 / 78 us for the matmuls (155-191 against 24-164 us at 4,096): its
    grid has one block per (row, KV head) for the few folded queries, so most SMs idle. On CPU SDPA is the
    faster one (220 against 268 us at b = 1, 5.2 against 7.5 ms at b = 16, SmolLM2 shapes), so it stays."""
    b, H, T, D = q.shape
    if q.is_cuda and T == 1:
        return matmul_attention(q, k, v, mask)
    q, mask = _fold_query_groups(q, mask, k.shape[1])
    if q.is_cuda:  # cuDNN attention failed inside CUDA-graph capture (CUDNN_STATUS_INTERNAL_ERROR, torch 2.11)
        with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]):
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.reshape(b, H, T, D)


def matmul_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`grouped_attention` written as two batched matmuls around a float32 softmax (grouped-query heads folded
    the same way, K/V never expanded); every query row must see at least one position. For few queries.
    `mask` is boolean or, cheaper when it serves every layer of a step, its `additive_mask` (the scaled
    scores and the bias then cost one kernel, the same float32 values: x * scale + 0 and -inf)."""
    b, H, T, D = q.shape
    q, mask = _fold_query_groups(q, mask, k.shape[1])
    scores = torch.matmul(q, k.transpose(-1, -2))
    if mask.dtype == torch.bool:
        scores = (scores.float() * (D ** -0.5)).masked_fill(~mask, float("-inf"))
    else:
        scores = torch.add(mask, scores, alpha=D ** -0.5)
    probs = torch.softmax(scores, dim=-1).to(v.dtype)
    return torch.matmul(probs, v).reshape(b, H, T, D)


def additive_mask(mask: torch.Tensor) -> torch.Tensor:
    """A boolean attention mask as a float32 bias: 0 where visible, -inf where not."""
    return torch.zeros(mask.shape, dtype=torch.float32, device=mask.device).masked_fill_(~mask, float("-inf"))


def _fold_query_groups(q: torch.Tensor, mask: torch.Tensor, n_kv: int) -> tuple[torch.Tensor, torch.Tensor]:
    """q (b, H, T, D) as (b, Hkv, G*T, D) and the mask (b, 1, T, L) as (b, 1, G*T, L): query head h = j * G + g
    attends with KV head j (HF's repeat_kv order). A single query's mask (b, 1, 1, L) already broadcasts over
    the G folded rows and is returned as it is (boolean or additive)."""
    b, H, T, D = q.shape
    G, L = H // n_kv, mask.shape[-1]
    if G == 1 or T == 1:
        return q.reshape(b, n_kv, G * T, D), mask
    return q.reshape(b, n_kv, G * T, D), mask[:, :, None].expand(b, 1, G, T, L).reshape(b, 1, G * T, L)
