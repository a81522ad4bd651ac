"""The KV engine against HF `generate` on the same model: same greedy tokens and log-probs (fp32,
atol 1e-4) for ragged batches with continuous batching, multi-turn keyed reuse, shared prompts, choice
mode and LoRA (adapter on and off); sampled log-probs equal a teacher-forced forward pass."""

import pytest
import torch

from dreamgym.config import ModelConfig
from dreamgym.models.engine import engine_for, engine_supports
from dreamgym.models.generation import GenerationSettings, generate_samples, release_keys
from dreamgym.models.loading import load_model

ATOL = 1e-4


@pytest.fixture(scope="module")
def tiny():
    model, tok = load_model(ModelConfig(name="tiny-random"), for_training=True)
    with torch.no_grad():  # a non-identity adapter, so "adapter on" and "off" differ
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    return model, tok


def _prompts(tok, n: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 40, (n,), generator=g).tolist()
    return [torch.randint(10, 4000, (L,), generator=g).tolist() for L in lengths]


def _both(model, tok, prompts, keys=None, **kw):
    hf = generate_samples(model, tok, prompts, GenerationSettings(backend="hf", **kw))
    en = generate_samples(model, tok, prompts, GenerationSettings(backend="engine", **kw), keys=keys)
    return hf, en


def _assert_same(hf, en):
    for a, b in zip(hf, en, strict=True):
        assert a.ids == b.ids and a.stopped == b.stopped
        torch.testing.assert_close(torch.tensor(b.logprobs), torch.tensor(a.logprobs), rtol=0, atol=ATOL)
        assert a.allowed == b.allowed


def test_supported_model_types(tiny):
    assert engine_supports(tiny[0])
    assert not engine_supports(torch.nn.Linear(2, 2))


def test_greedy_matches_hf_generate_with_continuous_batching(tiny):
    model, tok = tiny
    prompts = _prompts(tok, 11)
    hf, en = _both(model, tok, prompts, max_new_tokens=12, batch_size=4)
    _assert_same(hf, en)


def test_multi_turn_keys_reuse_the_cache_and_match_a_full_reencode(tiny):
    model, tok = tiny
    eng = engine_for(model, tok)
    prompts = _prompts(tok, 6, seed=1)
    keys = list(range(6))
    settings = GenerationSettings(backend="engine", max_new_tokens=5, batch_size=3)
    first = generate_samples(model, tok, prompts, settings, keys=keys)
    glue = _prompts(tok, 6, seed=2)
    turn2 = [p + s.ids + g for p, s, g in zip(prompts, first, glue)]
    before = dict(eng.stats)
    order = [3, 1, 5, 0, 2, 4]  # any order: keys, not positions, find the cache rows
    second = generate_samples(model, tok, [turn2[i] for i in order], settings, keys=[keys[i] for i in order])
    reused = eng.stats["reused_tokens"] - before["reused_tokens"]
    assert reused == sum(len(p) + len(s.ids) - 1 for p, s in zip(prompts, first))
    assert eng.stats["prefill_tokens"] - before["prefill_tokens"] == sum(len(g) + 1 for g in glue)
    hf = generate_samples(model, tok, [turn2[i] for i in order], GenerationSettings(backend="hf", max_new_tokens=5))
    _assert_same(hf, second)
    release_keys(model, keys)
    assert all(o is None for o in eng.owner)


def test_identical_prompts_are_prefilled_once(tiny):
    model, tok = tiny
    eng = engine_for(model, tok)
    release_keys(model)
    prompt = _prompts(tok, 1, seed=3)[0]
    before = dict(eng.stats)
    hf, en = _both(model, tok, [prompt] * 8 + _prompts(tok, 2, seed=4), max_new_tokens=6, batch_size=16)
    _assert_same(hf, en)
    assert eng.stats["shared_prefill_rows"] - before["shared_prefill_rows"] == 7


def test_choice_mode_matches_hf(tiny):
    model, tok = tiny
    prompts = _prompts(tok, 5, seed=5)
    end = tok.convert_tokens_to_ids("<|im_end|>")
    choices = [[[11, 12, end], [11, 13, 14, end], [20, end]], None, [[7, end]], [[30, 31, end], [30, 32, end]], None]
    hf = generate_samples(model, tok, prompts, GenerationSettings(backend="hf", max_new_tokens=4), choices=choices)
    en = generate_samples(model, tok, prompts, GenerationSettings(backend="engine", max_new_tokens=4, batch_size=2),
                          choices=choices)
    _assert_same(hf, en)
    assert en[2].ids == [7, end] and en[2].logprobs == [0.0, 0.0]


def test_adapter_off_generates_with_the_base(tiny):
    model, tok = tiny
    prompts = _prompts(tok, 4, seed=6)
    with model.disable_adapter():
        hf, en = _both(model, tok, prompts, max_new_tokens=8)
    _assert_same(hf, en)
    on = generate_samples(model, tok, prompts, GenerationSettings(backend="engine", max_new_tokens=8))
    assert any(a.ids != b.ids for a, b in zip(on, en)), "the adapter changes the output"


def test_sampled_logprobs_are_the_teacher_forced_ones(tiny):
    model, tok = tiny
    prompts = _prompts(tok, 5, seed=7)
    settings = GenerationSettings(backend="engine", max_new_tokens=10, do_sample=True, temperature=0.7, batch_size=2)
    samples = generate_samples(model, tok, prompts, settings, generator_seed=0)
    again = generate_samples(model, tok, prompts, settings, generator_seed=0)
    assert [s.ids for s in samples] == [s.ids for s in again], "seeded sampling is reproducible"
    model.eval()
    with torch.no_grad():
        for p, s in zip(prompts, samples):
            ids = torch.tensor([p + s.ids])
            logits = model(input_ids=ids).logits[0, len(p) - 1:-1].float() / 0.7
            want = logits.log_softmax(-1).gather(-1, torch.tensor(s.ids)[:, None])[:, 0]
            torch.testing.assert_close(torch.tensor(s.logprobs), want, rtol=0, atol=ATOL)
    model.train()


def test_hf_backend_setting_is_validated():
    with pytest.raises(ValueError, match="backend"):
        GenerationSettings(backend="vllm")


def test_cache_is_dropped_when_weights_change_in_place(tiny):
    model, tok = tiny
    prompts = _prompts(tok, 3, seed=8)
    settings = GenerationSettings(backend="engine", max_new_tokens=6)
    generate_samples(model, tok, prompts, settings)  # leaves these prompts' K/V in free rows
    lora_b = next(p for n, p in model.named_parameters() if "lora_B" in n)
    saved = lora_b.detach().clone()
    opt = torch.optim.AdamW([lora_b], lr=1.0, fused=True)  # fused AdamW does not bump `_version`
    lora_b.grad = torch.ones_like(lora_b)
    opt.step()
    try:
        hf, en = _both(model, tok, prompts, max_new_tokens=6)
        _assert_same(hf, en)
    finally:
        with torch.no_grad():
            lora_b.copy_(saved)
        lora_b.grad = None


def test_static_shape_decode_of_the_cuda_graph_path_matches_hf(tiny):
    """The padded, full-capacity decode step the CUDA graphs capture, run eagerly on CPU: padded rows'
    garbage writes must never reach a row's valid ids (waiting rows, finished rows, other keys' rows)."""
    model, tok = tiny
    eng = engine_for(model, tok)
    eng.padded_decode = True
    try:
        keep = generate_samples(model, tok, _prompts(tok, 2, seed=9), GenerationSettings(backend="engine"),
                                keys=["a", "b"])  # other keys' rows stay in the cache
        prompts = _prompts(tok, 7, seed=10) + [_prompts(tok, 1, seed=11)[0]] * 3
        picks = eng.stats["graph_picks"]
        hf, en = _both(model, tok, prompts, max_new_tokens=9, batch_size=4)
        _assert_same(hf, en)
        assert eng.stats["graph_picks"] > picks  # greedy: the padded step picked ids itself and fed them on
        sampled = GenerationSettings(backend="engine", max_new_tokens=6, do_sample=True, temperature=0.7)
        a = generate_samples(model, tok, prompts[:3], sampled, generator_seed=3)
        eng.padded_decode = False
        b = generate_samples(model, tok, prompts[:3], sampled, generator_seed=3)
        eng.padded_decode = True
        assert [x.ids for x in a] == [x.ids for x in b]  # sampling: the padded step returns logits as before
        turn2 = [p + s.ids for p, s in zip(_prompts(tok, 2, seed=9), keep)]
        hf2 = generate_samples(model, tok, turn2, GenerationSettings(backend="hf", max_new_tokens=5))
        en2 = generate_samples(model, tok, turn2, GenerationSettings(backend="engine", max_new_tokens=5), keys=["a", "b"])
        _assert_same(hf2, en2)
    finally:
        eng.padded_decode = False
        release_keys(model)


def test_compiled_static_shape_decode_matches_hf(tiny):
    """`compile_decode`: the padded step's layers through torch.compile (Inductor's fused CPU kernels here; on
    GPU the compiled step is what the CUDA graph captures) give HF's greedy tokens and log-probs, across the
    batch widths continuous batching goes through. Regional: one graph per layer half serves every layer (no
    recompile per layer), and the KV cache writes are not in compiled code."""
    from torch._dynamo.utils import counters

    model, tok = tiny
    eng = engine_for(model, tok)
    eng.padded_decode = eng.compile_decode = True
    try:
        graphs_before = counters["stats"]["unique_graphs"]
        hf, en = _both(model, tok, _prompts(tok, 5, seed=14), max_new_tokens=8, batch_size=4)
        _assert_same(hf, en)
        assert eng.stats["graph_picks"] > 0
        # layer_qkv and layer_out: a static graph each, then one dynamic-width recompile each (widths 4, 2, 1)
        assert counters["stats"]["unique_graphs"] - graphs_before <= 4
        assert model.config.num_hidden_layers == 2 and eng.compiled_layers() is eng.compiled_layers()
    finally:
        eng.padded_decode = eng.compile_decode = False
        release_keys(model)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("graphs,compiled", [(False, False), (True, False), (True, True)])
def test_cuda_engine_matches_hf(graphs, compiled):
    model, tok = load_model(ModelConfig(name="tiny-random", device="cuda", dtype="float32"), for_training=True)
    engine_for(model, tok).cuda_graphs = graphs
    engine_for(model, tok).compile_decode = compiled
    prompts = _prompts(tok, 12, seed=12) + [_prompts(tok, 1, seed=13)[0]] * 4
    hf, en = _both(model, tok, prompts, max_new_tokens=10, batch_size=8)
    _assert_same(hf, en)
    if graphs:  # a failed capture falls back to eager decoding (logged): the graph path must really have run
        eng = engine_for(model, tok)
        assert eng.cuda_graphs and eng.padded.steps, "CUDA graph capture failed (see the KVEngine warning)"
    keys = list(range(len(prompts)))
    first = generate_samples(model, tok, prompts, GenerationSettings(backend="engine", max_new_tokens=6), keys=keys)
    turn2 = [p + s.ids + [5, 6, 7] for p, s in zip(prompts, first)]
    hf2 = generate_samples(model, tok, turn2, GenerationSettings(backend="hf", max_new_tokens=6))
    en2 = generate_samples(model, tok, turn2, GenerationSettings(backend="engine", max_new_tokens=6), keys=keys)
    _assert_same(hf2, en2)


def test_matmul_attention_equals_sdpa_grouped_attention():
    """The CUDA decode attention (`matmul_attention`) computes what SDPA does, for grouped-query heads and
    ragged masks (checked here in float32 on CPU, where `grouped_attention` itself runs SDPA)."""
    from dreamgym.models.decoder import additive_mask, grouped_attention, matmul_attention
    from dreamgym.op_count import OpCounter

    g = torch.Generator().manual_seed(0)
    for b, H, n_kv, T, L in [(4, 6, 2, 1, 37), (3, 4, 4, 1, 16), (2, 6, 3, 3, 20)]:
        q, k, v = (torch.randn(*shape, generator=g) for shape in ((b, H, T, 8), (b, n_kv, L, 8), (b, n_kv, L, 8)))
        last = torch.randint(T - 1, L, (b,), generator=g)  # each row sees positions <= its last (>= 0)
        mask = torch.arange(L)[None, None, :] <= (last[:, None, None] - torch.arange(T)[None, :, None].flip(1))
        mask = mask[:, None]  # (b, 1, T, L)
        torch.testing.assert_close(matmul_attention(q, k, v, mask), grouped_attention(q, k, v, mask),
                                   rtol=1e-6, atol=1e-6)
        with OpCounter() as bool_ops:
            want = matmul_attention(q, k, v, mask)
        bias = additive_mask(mask)
        with OpCounter() as bias_ops:
            got = matmul_attention(q, k, v, bias)
        assert torch.equal(got, want), "the additive bias gives the same float32 scores"
        if T == 1:  # matmul, scale, not, masked_fill, softmax, matmul -> matmul, add, softmax, matmul
            assert (bool_ops.total, bias_ops.total) == (6, 4)
            qb, kb, vb = q.bfloat16(), k.bfloat16(), v.bfloat16()  # + two casts around the float32 softmax
            with OpCounter() as bool_ops:
                want = matmul_attention(qb, kb, vb, mask)
            with OpCounter() as bias_ops:
                got = matmul_attention(qb, kb, vb, bias)
            assert torch.equal(got, want)
            assert (bool_ops.total, bias_ops.total) == (8, 5)


def test_grouped_query_attention_matches_hf():
    """3 query heads per KV head (SmolLM2-135M has 9 / 3): the engine folds them without expanding K/V."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from dreamgym.models.loading import load_tokenizer
    tok = load_tokenizer(ModelConfig(name="tiny-random"))
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=6, num_key_value_heads=2, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg).eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    prompts = _prompts(tok, 6, seed=14) + [_prompts(tok, 1, seed=15)[0]] * 3
    hf, en = _both(model, tok, prompts, max_new_tokens=8, batch_size=4)
    _assert_same(hf, en)
    eng = engine_for(model, tok)
    eng.padded_decode = True
    hf, en = _both(model, tok, prompts, max_new_tokens=8, batch_size=4)
    _assert_same(hf, en)


def test_pick_tokens_and_top_p_exact():
    from dreamgym.models.sampling import pick_tokens, top_p_filter

    logits = torch.tensor([[0.0, 2.0, 1.0, -1.0], [3.0, 0.0, 0.0, 1.0]])
    ids, lps = pick_tokens(logits, [None, [1, 3]], temperature=1.0, do_sample=False)
    assert ids == [1, 3]  # row 1: the best *allowed* id
    assert lps[0] == pytest.approx(2.0 - torch.logsumexp(logits[0], 0).item(), abs=1e-6)
    assert lps[1] == pytest.approx(1.0 - torch.logsumexp(torch.tensor([0.0, 1.0]), 0).item(), abs=1e-6)
    ids, lps = pick_tokens(logits, [[2], None], temperature=0.5, do_sample=True)
    assert ids[0] == 2 and lps[0] == 0.0  # a forced choice has log-prob exactly 0
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    torch.testing.assert_close(top_p_filter(probs, 0.8), torch.tensor([[0.5, 0.3, 0.0, 0.0]]))
    torch.testing.assert_close(top_p_filter(probs, 0.81), torch.tensor([[0.5, 0.3, 0.15, 0.0]]))


def test_forced_candidate_tails_skip_decode_steps(tiny):
    """A candidate whose remaining ids are forced is completed without a decode step per token (and the next
    turn's prefill feeds the tail): same ids and log-probs as decoding them, far fewer steps."""
    model, tok = tiny
    end = tok.convert_tokens_to_ids("<|im_end|>")
    prompts = _prompts(tok, 3, seed=16)
    long = list(range(100, 140))
    choices = [[long + [end]], [[7, 8, end], [7, 9, end]], [long + [end], [5, end]]]
    eng = engine_for(model, tok)
    before = eng.stats["decode_steps"]
    settings = GenerationSettings(backend="engine", max_new_tokens=4)
    en = generate_samples(model, tok, prompts, settings, choices=choices, keys=["x", "y", "z"])
    hf = generate_samples(model, tok, prompts, GenerationSettings(backend="hf", max_new_tokens=4), choices=choices)
    _assert_same(hf, en)
    assert eng.stats["decode_steps"] - before <= 2, "forced tails are appended, not decoded"
    turn2 = [p + s.ids + [5, 6] for p, s in zip(prompts, en)]
    hf2 = generate_samples(model, tok, turn2, GenerationSettings(backend="hf", max_new_tokens=4))
    en2 = generate_samples(model, tok, turn2, settings, keys=["x", "y", "z"])
    _assert_same(hf2, en2)
    release_keys(model)


def test_a_dropped_model_frees_its_engine_and_cache():
    """The engine is bound to its model without keeping it alive: a pipeline that loads one model per step
    (the quickstart loads a dozen) must not accumulate models and KV caches."""
    import gc
    import weakref

    from dreamgym.models.engine import bound_engine

    model, tok = load_model(ModelConfig(name="tiny-random"))
    generate_samples(model, tok, _prompts(tok, 3), GenerationSettings(backend="engine", max_new_tokens=4))
    engine = bound_engine(model)
    assert engine is not None and engine.K is not None and engine_for(model, tok) is engine
    model_ref, cache_ref = weakref.ref(model), weakref.ref(engine.K)
    del model, engine
    gc.collect()
    assert model_ref() is None and cache_ref() is None
