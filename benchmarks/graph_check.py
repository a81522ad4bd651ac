"""CUDA-graph capture check of the KV engine's decode step (GPU only): captures `KVEngine._step_eager` on a
tiny-random model without the engine's eager fallback, so a failure shows its full traceback, then
captures each piece of the step alone (embedding, rotary, projections, cache write, attention, norm + head)
and says which ones cannot be captured.

    python benchmarks/graph_check.py
"""

from __future__ import annotations

import sys
import traceback

import torch


def capture(name: str, fn) -> bool:
    """Warm `fn` up on a side stream, capture it into a CUDA graph, replay once; print the outcome."""
    try:
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(2):
                fn()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fn()
        g.replay()
        torch.cuda.synchronize()
        print(f"  capture ok: {name}")
        return True
    except Exception as e:  # noqa: BLE001 -- the report is the point
        print(f"  capture FAILED: {name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        traceback.print_exc(limit=-6, file=sys.stdout)
        torch.cuda.synchronize()
        return False


def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("graph_check.py needs CUDA")
    from dreamgym.config import ModelConfig
    from dreamgym.models.decoder import grouped_attention, rms_norm, rotate, signed_sin
    from dreamgym.models.engine import engine_for
    from dreamgym.models.loading import load_model

    print(f"# torch {torch.__version__}, {torch.cuda.get_device_name()}")
    for dtype in ("float32", "bfloat16"):
        model, tok = load_model(ModelConfig(name="tiny-random", device="cuda", dtype=dtype))
        eng = engine_for(model, tok)
        eng._reserve(4, 256)
        a, C = 4, eng.K.shape[3]
        ids = torch.zeros(a, dtype=torch.long, device="cuda")
        pos = torch.full((a,), 5, dtype=torch.long, device="cuda")
        print(f"## {dtype}: whole decode step (rows {a}, cache {C})")
        capture("KVEngine._step_eager", lambda: eng._step_eager(ids, pos, a, C))
        core = eng.core
        m = core.model
        h = m.embed_tokens(ids[:, None])
        cfg = core.config
        q = torch.randn(a, cfg.num_attention_heads, 1, cfg.hidden_size // cfg.num_attention_heads, device="cuda",
                        dtype=h.dtype)
        k = torch.randn(a, cfg.num_key_value_heads, 1, q.shape[-1], device="cuda", dtype=h.dtype)
        rows = torch.arange(a, device="cuda")
        mask = (torch.arange(C, device="cuda")[None, :] <= pos[:, None])[:, None, None, :]
        layer = m.layers[0]
        capture("embedding", lambda: m.embed_tokens(ids[:, None]))
        capture("rotary_emb", lambda: m.rotary_emb(h, pos[:, None]))
        capture("rotate (roll + addcmul)", lambda: rotate(q, q[:1], signed_sin(q[:1])))
        capture("input_layernorm (F.rms_norm)", lambda: rms_norm(layer.input_layernorm, h))
        capture("q/k/v/o projections", lambda: layer.self_attn.q_proj(h))
        capture("mlp", lambda: layer.mlp(h))
        capture("cache write (index_put)", lambda: eng.K.__setitem__((0, rows, slice(None), pos), k[:, :, 0]))
        capture("grouped_attention", lambda: grouped_attention(q, eng.K[0, :a, :, :C], eng.V[0, :a, :, :C], mask))
        capture("norm + lm_head", lambda: core.lm_head(m.norm(h[:, 0])))


if __name__ == "__main__":
    main()
