"""The engine decoder's fused pieces (`models/decoder.py`) compute what the HF / peft modules compute, with the
exact op counts they were written for: RMSNorm via `F.rms_norm`, rotary as roll + addcmul, and an unmerged
LoRA projection as one `addmm` (or an in-place add for a float32 adapter on a bf16 base); the cases they do
not recognise run the module itself."""

import torch
from peft import LoraConfig, get_peft_model
from transformers.models.llama.modeling_llama import LlamaRMSNorm, apply_rotary_pos_emb

from dreamgym.models.decoder import project, rms_norm, rotate, signed_sin
from dreamgym.op_count import OpCounter


def _count(fn):
    with OpCounter() as c:
        out = fn()
    return out, c.total


class _Block(torch.nn.Module):
    def __init__(self, dtype=torch.float32):
        super().__init__()
        self.q_proj = torch.nn.Linear(16, 24, bias=False, dtype=dtype)
        self.k_proj = torch.nn.Linear(16, 8, bias=False, dtype=dtype)
        self.o_proj = torch.nn.Linear(24, 16, bias=False, dtype=dtype)


def _lora(dtype=torch.float32, dropout=0.0, **kw):
    torch.manual_seed(0)
    model = get_peft_model(_Block(dtype), LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout,
                                                     target_modules=["q_proj", "k_proj"], **kw))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    return model.eval(), model.base_model.model.q_proj


def test_rms_norm_equals_the_hf_module_and_falls_back_on_a_dtype_mismatch():
    torch.manual_seed(0)
    norm = LlamaRMSNorm(32, eps=1e-5)
    with torch.no_grad():
        norm.weight.normal_()
    x = torch.randn(3, 5, 32)
    torch.testing.assert_close(rms_norm(norm, x), norm(x), rtol=0, atol=1e-6)
    xb, nb = x.bfloat16(), LlamaRMSNorm(32, eps=1e-5).bfloat16()
    with torch.no_grad():
        nb.weight.copy_(norm.weight)
    got, want = rms_norm(nb, xb), nb(xb)
    assert got.dtype == torch.bfloat16
    ulp = want.float().abs() * 2 ** -7  # one bf16 rounding of the weight product
    assert ((got.float() - want.float()).abs() <= ulp + 1e-6).all()
    # a float32 weight on bf16 input: HF promotes to float32; the helper runs the module and keeps that
    out = rms_norm(norm, xb)
    assert out.dtype == torch.float32 and torch.equal(out, norm(xb))


def test_rotate_is_hf_rotary_in_three_ops():
    torch.manual_seed(0)
    q, k = torch.randn(2, 4, 3, 8), torch.randn(2, 2, 3, 8)
    angles = torch.randn(2, 3, 4)
    cos, sin = torch.cat((angles, angles), -1).cos(), torch.cat((angles, angles), -1).sin()  # (b, T, D), as HF's
    want_q, want_k = apply_rotary_pos_emb(q, k, cos, sin)
    cos, sin = cos[:, None], sin[:, None]
    ss = signed_sin(sin)
    got_q, ops = _count(lambda: rotate(q, cos, ss))
    torch.testing.assert_close(got_q, want_q, rtol=0, atol=1e-6)
    torch.testing.assert_close(rotate(k, cos, ss), want_k, rtol=0, atol=1e-6)
    assert ops == 3  # mul, roll, addcmul (HF: neg, cat, three products/sums = 5)
    assert torch.equal(signed_sin(sin)[..., :4], -sin[..., :4]) and torch.equal(signed_sin(sin)[..., 4:], sin[..., 4:])


def test_lora_projection_is_peft_forward_in_fewer_ops():
    model, q = _lora()
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        want, peft_ops = _count(lambda: q(x))
        got, ops = _count(lambda: project(q, x))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert (peft_ops, ops) == (5, 3)  # base, A, B, scale, add -> base, A, addmm
    plain = model.base_model.model.o_proj  # not a LoRA target: the module's own forward
    y = torch.randn(2, 5, 24)
    assert torch.equal(project(plain, y), plain(y))


def test_float32_adapter_on_a_bf16_base_rounds_like_peft():
    model, q = _lora(torch.bfloat16)  # peft upcasts the adapter to float32 (autocast_adapter_dtype)
    assert q.lora_A["default"].weight.dtype == torch.float32 and q.base_layer.weight.dtype == torch.bfloat16
    x = torch.randn(2, 5, 16).bfloat16()
    with torch.no_grad():
        want, peft_ops = _count(lambda: q(x))
        got, ops = _count(lambda: project(q, x))
    assert got.dtype == want.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want.float(), rtol=0, atol=0)
    assert (peft_ops, ops) == (7, 5)  # base, cast, A, B, scale, add, cast -> base, cast, A, B, scaled add_
    k, casts = model.base_model.model.k_proj, {}
    with torch.no_grad():
        project(q, x, casts)
        got, ops = _count(lambda: project(k, x, casts))  # q's cast of x serves k
        assert torch.equal(got, k(x)) and ops == 4


def test_disabled_merged_or_dropout_adapters_run_the_module():
    model, q = _lora(dropout=0.5)
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        torch.testing.assert_close(project(q, x), q(x), rtol=0, atol=1e-5)  # eval: dropout is off
        with model.disable_adapter():
            assert torch.equal(project(q, x), q.base_layer(x))
        model.train()
        torch.manual_seed(1)
        a = project(q, x)
        torch.manual_seed(1)
        assert torch.equal(a, q(x)), "training-mode dropout goes through peft's forward"
        model.eval()
        q.merge()
        assert q.merged and torch.equal(project(q, x), q(x))


def test_lora_variants_run_the_module():
    model, q = _lora(use_dora=True)
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        want, peft_ops = _count(lambda: q(x))
        got, ops = _count(lambda: project(q, x))
    assert torch.equal(got, want) and ops == peft_ops
