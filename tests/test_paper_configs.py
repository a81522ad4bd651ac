"""The paper presets (`configs/paper/`): every YAML loads into its config class, states the paper-notes
facts it cites, and the dry run (`pipelines/dry_run.py`) builds every object of each preset on the meta
device in seconds, with parameter counts equal to hand-computed values for the shipped architectures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dreamgym.config import FitWorldModelConfig, S2RConfig, TrainPolicyConfig, load_config
from dreamgym.errors import DreamGymError
from dreamgym.pipelines.dry_run import build, schema_for

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "configs" / "paper"
MODELS = PAPER / "models"
PRESETS = sorted(p.name for p in PAPER.glob("*.yaml"))
COMBOS = {"grpo+qwen2.5-7b": ["webshop_grpo.yaml", "policy/qwen2.5-7b.yaml"],
          "grpo+llama-3.1-8b": ["webshop_grpo.yaml", "policy/llama-3.1-8b.yaml"]}

# Hand-computed parameter counts (embeddings included; tied embeddings once). Per decoder layer:
# q H*H + k,v 2*H*KV*D + o H*H (+ Qwen's q,k,v biases H + 2*KV*D) + MLP 3*H*I + 2 norms 2*H.
LLAMA31_8B = 8_030_261_248   # 32 * 218_112_000 + 2 * 128_256 * 4096 + 4096
LLAMA32_3B = 3_212_749_824   # 28 * 100_669_440 + 128_256 * 3072 (tied) + 3072
QWEN25_7B = 7_615_616_512    # 28 * 233_057_792 + 2 * 152_064 * 3584 + 3584
# LoRA r=16 on q,k,v,o,gate,up,down: per layer 16 * sum(in + out) over the seven projections
LORA_8B, LORA_3B, LORA_QWEN = 41_943_040, 24_313_856, 40_370_176   # 32 * 1_310_720, 28 * 868_352, 28 * 1_441_792


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # model.name paths in the presets are relative to the repository root


def _from_config(folder: str, lora_r: int = 0) -> tuple[int, int]:
    """(total, LoRA) parameter counts from a shipped config.json, without transformers."""
    c = json.loads((MODELS / folder / "config.json").read_text())
    h, i, n = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    kv = c["num_key_value_heads"] * (c.get("head_dim") or h // c["num_attention_heads"])
    bias = h + 2 * kv if c["model_type"] == "qwen2" else 0
    layer = 2 * h * h + 2 * h * kv + bias + 3 * h * i + 2 * h
    embed = c["vocab_size"] * h * (1 if c["tie_word_embeddings"] else 2)
    lora = n * lora_r * ((h + h) * 2 + (h + kv) * 2 + (h + i) * 3)
    return n * layer + embed + h, lora


def test_hand_counts_match_the_shipped_configs():
    assert _from_config("llama-3.1-8b-instruct", 16) == (LLAMA31_8B, LORA_8B)
    assert _from_config("llama-3.2-3b-instruct", 16) == (LLAMA32_3B, LORA_3B)
    assert _from_config("qwen2.5-7b-instruct", 16) == (QWEN25_7B, LORA_QWEN)


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_loads_with_its_schema(name):
    cfg = load_config(schema_for(name), [PAPER / name])
    assert type(cfg) is schema_for(name)


def test_presets_cite_the_paper_facts():
    wm = load_config(FitWorldModelConfig, [PAPER / "webshop_world_model.yaml"])
    grpo = load_config(TrainPolicyConfig, [PAPER / "webshop_grpo.yaml"])
    real = load_config(TrainPolicyConfig, [PAPER / "webshop_grpo_real.yaml"])
    s2r = load_config(S2RConfig, [PAPER / "webshop_s2r.yaml"])
    assert wm.model.name.endswith("llama-3.1-8b-instruct") and wm.model.quantization == "nf4"
    assert wm.model.dtype == "bfloat16" and wm.prompt.reasoning
    assert wm.prompt == grpo.synthetic.prompt  # the synthetic env prompts as the adapter was trained
    assert grpo.synthetic.model.name == wm.model.name and grpo.synthetic.model.quantization == "nf4"
    assert grpo.model.name.endswith("llama-3.2-3b-instruct") and grpo.train_env == "synthetic"
    assert grpo.rollout.max_turns == 15 and grpo.algo.name == "grpo" and grpo.algo.group_size >= 2
    assert grpo.max_iterations * grpo.algo.rollouts_per_iteration * grpo.rollout.max_turns >= 80_000
    assert real.train_env == "real" and real.real_transition_budget == 80_000 and real.algo == grpo.algo
    assert s2r.real_budget() == 5_000 and s2r.s2r.real_budget < 0.1 * 80_000
    for name, fragment in COMBOS.items():
        cfg = load_config(TrainPolicyConfig, [PAPER / f for f in fragment])
        assert Path(cfg.model.name).name.startswith(name.split("+")[1]), name


def test_shipped_model_files_are_small_and_weightless():
    files = [f for f in MODELS.rglob("*") if f.is_file()]
    assert len(files) >= 13 and all(f.stat().st_size < 1_000_000 for f in files)
    assert not [f for f in files if f.suffix in (".safetensors", ".bin", ".gguf")]


def test_architecture_only_folder_refuses_a_real_load():
    from dreamgym.config import ModelConfig
    from dreamgym.models.loading import load_model

    with pytest.raises(DreamGymError, match="model.name"):
        load_model(ModelConfig(name="configs/paper/models/llama-3.2-3b-instruct", device="cpu"))


def test_tokenizer_stand_in_without_the_package(monkeypatch, tmp_path):
    from dreamgym.config import ModelConfig
    from dreamgym.models import architectures
    from dreamgym.models.loading import load_tokenizer

    monkeypatch.setattr(architectures, "_package_dir", lambda package, subdir: None)
    tok = load_tokenizer(ModelConfig(name="configs/paper/models/qwen2.5-7b-instruct"))
    assert len(tok) == 49152  # SmolLM2's: fits every shipped embedding matrix
    assert "stand-in" in architectures.tokenizer_description(MODELS / "qwen2.5-7b-instruct")


@pytest.fixture(scope="module")
def reports():
    import os

    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        built = {name: build(PAPER / name, encoder="hashing") for name in PRESETS}
        built.update({k: build([PAPER / f for f in v], encoder="hashing") for k, v in COMBOS.items()})
    finally:
        os.chdir(cwd)
    return built


EXPECTED = {  # preset -> {role: (total params, trainable params)} of the built modules
    "webshop_world_model.yaml": {"experience_model": (LLAMA31_8B + LORA_8B, LORA_8B)},
    "webshop_world_model_fsdp.yaml": {"experience_model": (LLAMA31_8B + LORA_8B, LORA_8B)},
    "webshop_grpo.yaml": {"policy": (LLAMA32_3B + LORA_3B, LORA_3B), "experience_model": (LLAMA31_8B, 0)},
    "webshop_ppo.yaml": {"policy": (LLAMA32_3B + LORA_3B + 3073, LORA_3B + 3073),  # + value head (H + 1)
                         "experience_model": (LLAMA31_8B, 0)},
    "webshop_s2r.yaml": {"policy": (LLAMA32_3B + LORA_3B, LORA_3B), "experience_model": (LLAMA31_8B, 0)},
    "webshop_grpo_real.yaml": {"policy": (LLAMA32_3B + LORA_3B, LORA_3B)},
    "webshop_sft.yaml": {"policy": (LLAMA32_3B + LORA_3B, LORA_3B)},
    "webshop_dpo.yaml": {"policy": (LLAMA32_3B + LORA_3B, LORA_3B)},
    "webshop_eval.yaml": {"policy": (LLAMA32_3B, 0)},
    "grpo+qwen2.5-7b": {"policy": (QWEN25_7B + LORA_QWEN, LORA_QWEN), "experience_model": (LLAMA31_8B, 0)},
    "grpo+llama-3.1-8b": {"policy": (LLAMA31_8B + LORA_8B, LORA_8B), "experience_model": (LLAMA31_8B, 0)},
}


def test_dry_run_covers_every_preset():
    assert set(EXPECTED) == set(PRESETS) | set(COMBOS)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_dry_run_builds_every_object_with_exact_counts(reports, name):
    r = reports[name]
    got = {m.role: (m.total_params, m.trainable_params) for m in r.models}
    assert got == EXPECTED[name]
    assert r.seconds < 120  # seconds on a CPU; nothing is loaded or allocated
    assert "optimizer" in r.objects or r.schema == "EvaluateConfig"
    if any(m.role == "experience_model" for m in r.models) and r.schema != "FitWorldModelConfig":
        assert {"buffer", "predictor", "generator", "venv", "datamodule", "module"} <= set(r.objects)
        assert r.objects["venv"] == "SyntheticVectorEnv" and r.objects["buffer"] == "ReplayBuffer"
    for m in r.models:
        assert m.vocab <= {"llama": 128256, "qwen2": 152064}["qwen2" if "qwen" in m.name else "llama"]
        assert all(v >= 0 for v in m.memory_gib.values()) and m.memory_gib["weights"] > 0


def test_fsdp_preset_builds_lightning_fsdp_with_the_single_gpu_effective_batch(reports):
    fsdp, single = reports["webshop_world_model_fsdp.yaml"], reports["webshop_world_model.yaml"]
    assert fsdp.objects["strategy"] == "FSDPStrategy" and fsdp.facts["devices"] == 8
    assert fsdp.facts["effective_batch"] == single.facts["effective_batch"] == 32
    assert fsdp.models[0].memory_gib["weights"] > 14  # bf16 base, sharded over the 8 devices at run time


def test_dry_run_memory_estimate_and_budgets(reports, monkeypatch):
    wm = reports["webshop_world_model.yaml"]
    # 4-bit decoder linears (6,979,321,856 weights at ~0.516 B) + fp32 embeddings/head/norms (QLoRA training)
    assert 7.0 < wm.models[0].memory_gib["weights"] < 7.5
    assert wm.memory_gib < 16  # the 8B QLoRA SFT fits a 24 GB card with its configured batch
    inference = reports["webshop_grpo.yaml"].models[1].memory_gib["weights"]
    assert 5.0 < inference < 5.6  # same 4-bit body, bf16 embeddings and head
    assert reports["webshop_s2r.yaml"].facts["s2r_real_budget"] == 5000
    assert reports["webshop_grpo_real.yaml"].objects["venv"] == "BudgetedVectorEnv"
    for name, rows in (("webshop_sft.yaml", 8), ("webshop_dpo.yaml", 8)):  # 8 episodes / 8 pairs (16 rows) a batch
        micro = reports[name].models[0].memory_gib["activations"]  # 4096-token micro-batches: 1 episode / 1 pair
        monkeypatch.chdir(ROOT)  # the presets name their model folders relative to the repository
        whole = build(PAPER / name, ["train.micro_batch_tokens=0"], encoder="hashing")
        assert whole.models[0].memory_gib["activations"] == pytest.approx(rows * micro, rel=0.01), name
    qwen = next(m for m in reports["grpo+qwen2.5-7b"].models if m.role == "policy")
    assert qwen.memory_gib["kv_cache"] == pytest.approx(reports["webshop_grpo.yaml"].models[0].memory_gib["kv_cache"] / 2)
