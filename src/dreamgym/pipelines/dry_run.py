"""Dry run of a preset: build every object a command would train with (configs resolved, models on the
meta device with their LoRA adapters, tokenizers, the real env, replay buffer, synthetic env, curriculum
generator, the Lightning module and its optimizer param groups, the rollout DataModule) without reading a
weight or training, and report parameter counts and an estimate of GPU memory. For the paper presets
(`configs/paper/`, whose model folders hold configs and tokenizer settings only) on a CPU in seconds.

    python -m dreamgym.pipelines.dry_run configs/paper/*.yaml      # one report per preset
    python -m dreamgym.pipelines.dry_run configs/paper/webshop_grpo.yaml+configs/paper/policy/qwen2.5-7b.yaml

Which config class a preset fills follows its file name (`schema_for`). The memory estimate (GiB, one
GPU, all models of the command resident at once) adds, per model: base weights (nf4: 4-bit linear layers
of the decoder with double-quantised absmax, ~0.516 byte a weight, everything else in the compute dtype,
upcast to float32 for QLoRA training as peft's `prepare_model_for_kbit_training` does), trainable weights
at 16 bytes each (fp32 weight + grad + two AdamW moments), the KV cache of the configured generation batch
in bf16, and a rough training-activation term (checkpointed: one (B, T, H) tensor per layer; otherwise
~(10 H + 4 I) bf16 values per token per layer) plus the policy's fp32 logits over sampled tokens of a
minibatch, and PolicyRL's scoring pass (old log-probs of the whole iteration batch in one no-grad forward:
last hidden states + fp32 logits over every sampled token, worst case max_new_tokens each). Components are
summed as if all were resident at once (rollout KV caches and update activations are not, quite): an upper
bound, with sampled actions at their max_new_tokens. Not counted: CUDA context (~0.5 GiB), allocator fragmentation, the sentence encoder (~0.1 GiB on CPU).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from dreamgym.config import (DPOPolicyConfig, EvaluateConfig, FitWorldModelConfig, ModelConfig, ReplayConfig,
                             S2RConfig, SFTPolicyConfig, TrainPolicyConfig, load_config)

__all__ = ["ModelReport", "DryRunReport", "schema_for", "build", "build_all", "format_reports", "main"]

GIB = 1024 ** 3
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)
"""bytes per 4-bit weight: packed nibbles + 8-bit absmax per 64-block + fp32 absmax per 256 blocks"""


@dataclass
class ModelReport:
    """One model of a command as the dry run built it."""

    role: str
    """'policy', 'experience_model' (synthetic env + curriculum generator), or the trained model"""
    name: str
    total_params: int
    """every parameter, adapter included (tied embeddings counted once)"""
    trainable_params: int
    base_params: int
    """total minus the LoRA adapter and heads added for training"""
    quantization: str
    tokenizer: str
    vocab: int
    """len(tokenizer)"""
    memory_gib: dict[str, float] = field(default_factory=dict)


@dataclass
class DryRunReport:
    """What a preset builds and what it would need on a GPU."""

    files: list[str]
    schema: str
    models: list[ModelReport]
    objects: dict[str, str]
    """object name -> class name of everything built"""
    facts: dict[str, Any]
    """derived numbers: rollouts per iteration, budgets, optimizer groups"""
    seconds: float

    @property
    def memory_gib(self) -> float:
        return round(sum(sum(m.memory_gib.values()) for m in self.models), 2)


def schema_for(path: str | Path) -> type:
    """Config class of a preset by its file name: *world_model* -> FitWorldModelConfig, *s2r* -> S2RConfig,
    *_sft -> SFTPolicyConfig, *_dpo -> DPOPolicyConfig, *eval* -> EvaluateConfig, else TrainPolicyConfig."""
    stem = Path(path).stem
    if "world_model" in stem:
        return FitWorldModelConfig
    if "s2r" in stem:
        return S2RConfig
    if stem.endswith("_sft"):
        return SFTPolicyConfig
    if stem.endswith("_dpo"):
        return DPOPolicyConfig
    if "eval" in stem:
        return EvaluateConfig
    return TrainPolicyConfig


def build(files: str | Path | Sequence[str | Path], overrides: Sequence[str] = (), schema: type | None = None,
          encoder: str = "minilm") -> DryRunReport:
    """Load the preset(s) (merged in order) into their config class and build every object on the meta
    device; `encoder` is the replay buffer's sentence encoder ('hashing' skips loading MiniLM)."""
    files = [files] if isinstance(files, (str, Path)) else list(files)
    schema = schema or schema_for(files[0])
    t0 = time.perf_counter()
    cfg = load_config(schema, files, list(overrides))
    objects: dict[str, Any] = {"config": cfg}
    if isinstance(cfg, FitWorldModelConfig):
        models, facts = _build_world_model(cfg, objects)
    elif isinstance(cfg, TrainPolicyConfig):
        models, facts = _build_train_policy(cfg, objects, encoder)
    elif isinstance(cfg, SFTPolicyConfig):
        models, facts = _build_offline(cfg, objects)
    elif isinstance(cfg, EvaluateConfig):
        models, facts = _build_evaluate(cfg, objects)
    else:
        raise TypeError(f"no dry run for {schema.__name__}")
    return DryRunReport(files=[str(f) for f in files], schema=schema.__name__, models=models,
                        objects={k: type(v).__name__ for k, v in objects.items()}, facts=facts,
                        seconds=round(time.perf_counter() - t0, 2))


def build_all(config_paths: Sequence[str | Path | Sequence[str | Path]], overrides: Sequence[str] = (),
              encoder: str = "minilm") -> list[DryRunReport]:
    """`build` for each entry (a preset, or a list of presets merged in order)."""
    return [build(p, overrides, encoder=encoder) for p in config_paths]


def format_reports(reports: Sequence[DryRunReport]) -> str:
    """A markdown table: one row per model of each preset, memory components and totals in GiB."""
    lines = ["| preset | role | model | params (total) | trainable | quant | memory GiB (components) | preset GiB |",
             "|---|---|---|---:|---:|---|---|---:|"]
    for r in reports:
        preset = " + ".join(Path(f).name for f in r.files)
        for m in r.models:
            parts = ", ".join(f"{k} {v:.2f}" for k, v in m.memory_gib.items())
            lines.append(f"| {preset} | {m.role} | {Path(m.name).name} | {m.total_params:,} | "
                         f"{m.trainable_params:,} | {m.quantization} | {parts} | {r.memory_gib:.1f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m dreamgym.pipelines.dry_run PRESET[+PRESET...] ...`: print the reports."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(__doc__)
        return 2
    reports = build_all([a.split("+") for a in args])
    print(format_reports(reports))
    for r in reports:
        print(f"\n{' + '.join(r.files)} ({r.schema}, built in {r.seconds} s): {r.facts}")
        print("  objects: " + ", ".join(f"{k}={v}" for k, v in r.objects.items()))
        for m in r.models:
            print(f"  {m.role} tokenizer: {m.tokenizer} (len {m.vocab})")
    return 0


# -- builders ------------------------------------------------------------------------------------

def _model(role: str, cfg: ModelConfig, for_training: bool, objects: dict) -> tuple[Any, Any, ModelReport]:
    from dreamgym.models.architectures import empty_model, tokenizer_description
    from dreamgym.models.loading import _model_source, load_tokenizer

    model, tok = empty_model(cfg, for_training), load_tokenizer(cfg)
    objects[f"{role}_model"], objects[f"{role}_tokenizer"] = model, tok
    source = _model_source(cfg) if cfg.name not in ("tiny-random",) else cfg.name
    total, trainable = _count(model)
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    report = ModelReport(role, cfg.name, total, trainable, total - lora, cfg.quantization,
                         tokenizer_description(source) if isinstance(source, Path) else str(source), len(tok))
    embed_rows = model.get_input_embeddings().weight.shape[0]
    if len(tok) > embed_rows:
        from dreamgym.errors import DreamGymError

        raise DreamGymError(f"{cfg.name}: tokenizer has {len(tok)} tokens, the embedding only {embed_rows} rows")
    return model, tok, report


def _build_world_model(cfg: FitWorldModelConfig, objects: dict):
    from dreamgym.experience.module import ExperienceModel

    model, tok, rep = _model("experience_model", cfg.model, True, objects)
    module = ExperienceModel(cfg, model, tok)
    opt = module.configure_optimizers()["optimizer"]
    objects.update(module=module, optimizer=opt)
    rep.total_params, rep.trainable_params = _count(module)
    sft = cfg.sft
    rep.memory_gib = _memory(model, cfg.model, training=True, trainable=rep.trainable_params,
                             act_tokens=(sft.batch_size, sft.max_seq_len))
    facts = dict(optimizer_groups=_groups(opt),
                 effective_batch=sft.batch_size * sft.accumulate_grad_batches * sft.devices,
                 demos_k=cfg.prompt.demos_k, history_turns=cfg.prompt.history_turns, strategy=sft.strategy,
                 devices=sft.devices)
    if sft.strategy != "auto":
        from dreamgym.models.distributed import build_strategy

        objects["strategy"] = build_strategy(sft.strategy, model, sft.devices, need_gpu=False)
    return [rep], facts


def _build_train_policy(cfg: TrainPolicyConfig, objects: dict, encoder: str):
    from dreamgym.curriculum.sampler import TaskPool
    from dreamgym.data.budget import BudgetedVectorEnv
    from dreamgym.data.datamodule import PolicyDataModule
    from dreamgym.envs.base import make_env
    from dreamgym.envs.vector import EnvPool
    from dreamgym.rl.module import PolicyRL

    env = objects["env"] = make_env(cfg.env)
    model, tok, rep = _model("policy", cfg.model, True, objects)
    module = objects["module"] = PolicyRL(cfg, model, tok)
    opt = objects["optimizer"] = module.configure_optimizers()
    rep.total_params, rep.trainable_params = _count(module)
    r, a = cfg.rollout, cfg.algo
    rows = a.minibatch_size if a.micro_batch_tokens == 0 else \
        min(a.minibatch_size, max(1, a.micro_batch_tokens // r.max_context_tokens))  # episodes in one pass
    rep.memory_gib = _memory(model, cfg.model, training=True, trainable=rep.trainable_params,
                             kv=(r.batch_size, r.max_context_tokens), act_tokens=(rows, r.max_context_tokens),
                             logit_tokens=0 if r.action_space == "choice" else rows * r.max_turns * r.max_new_tokens,
                             scoring=(rows, r.max_context_tokens,
                                      0 if r.action_space == "choice" else r.max_turns * r.max_new_tokens))
    reports, generator = [rep], None
    if cfg.train_env == "synthetic":
        from dreamgym.curriculum.generator import TaskGenerator
        from dreamgym.experience.predictor import ExperiencePredictor
        from dreamgym.experience.synthetic_env import SyntheticVectorEnv
        from dreamgym.models.generation import GenerationSettings
        from dreamgym.replay.buffer import ReplayBuffer

        s = cfg.synthetic
        wm, wtok, wrep = _model("experience_model", s.model, False, objects)
        buffer = objects["buffer"] = ReplayBuffer.from_config(ReplayConfig(encoder=encoder))
        settings = GenerationSettings(max_new_tokens=s.max_new_tokens, do_sample=s.do_sample,
                                      temperature=s.temperature, batch_size=s.batch_size)
        predictor = objects["predictor"] = ExperiencePredictor(wm, wtok, s.prompt, settings, buffer=buffer,
                                                               retrieval=s.retrieval, reasoning=s.prompt.reasoning,
                                                               bounded=s.bounded_decoding)
        venv = SyntheticVectorEnv(predictor, s, cfg.env.name, real_env=env, buffer=buffer)
        if cfg.curriculum.enabled:
            generator = objects["generator"] = TaskGenerator.from_config(wm, wtok, cfg.curriculum)
        wrep.memory_gib = _memory(wm, s.model, training=False, trainable=0, kv=(s.batch_size, _wm_context(cfg)))
        reports.append(wrep)
    else:
        venv = EnvPool(env)
        if cfg.real_transition_budget is not None:
            venv = BudgetedVectorEnv(venv, lambda: cfg.real_transition_budget)
    objects["venv"] = venv
    pool = objects["pool"] = TaskPool(env.tasks("train"), cfg.curriculum.max_synthetic, cfg.curriculum.seed)
    objects["datamodule"] = PolicyDataModule(cfg, module, venv, pool, generator=generator)
    facts = dict(train_env=cfg.train_env, algo=a.name, rollouts_per_iteration=a.rollouts_per_iteration,
                 max_iterations=cfg.max_iterations, optimizer_groups=_groups(opt),
                 max_transitions=cfg.max_iterations * a.rollouts_per_iteration * r.max_turns,
                 real_transition_budget=cfg.real_transition_budget, lambda_=cfg.curriculum.synthetic_share_cap,
                 demos_k=cfg.synthetic.prompt.demos_k, train_tasks=len(pool))
    if isinstance(cfg, S2RConfig):
        facts.update(s2r_real_budget=cfg.real_budget(), s2r_reference=cfg.real_budget_reference())
        objects["phase2_config"] = cfg.train_policy_config("real")
    return reports, facts


def _build_offline(cfg: SFTPolicyConfig, objects: dict):
    from dreamgym.envs.base import make_env
    from dreamgym.rl.offline import OfflinePolicy

    objects["env"] = make_env(cfg.env)
    model, tok, rep = _model("policy", cfg.model, True, objects)
    module = objects["module"] = OfflinePolicy(cfg, model, tok)
    opt = module.configure_optimizers()
    opt = objects["optimizer"] = opt["optimizer"] if isinstance(opt, dict) else opt
    rep.total_params, rep.trainable_params = _count(module)
    t, context = cfg.train, cfg.rollout.max_context_tokens
    per_unit = 2 if isinstance(cfg, DPOPolicyConfig) else 1  # a DPO pair is two rows, always in one pass
    rows = t.batch_size * per_unit
    if t.micro_batch_tokens:  # rows in one forward/backward pass
        rows = min(rows, per_unit * max(1, t.micro_batch_tokens // (per_unit * context)))
    rep.memory_gib = _memory(model, cfg.model, training=True, trainable=rep.trainable_params,
                             act_tokens=(rows, context))
    return [rep], dict(optimizer_groups=_groups(opt), batch_size=t.batch_size)


def _build_evaluate(cfg: EvaluateConfig, objects: dict):
    from dreamgym.envs.base import make_env

    env = objects["env"] = make_env(cfg.env)
    model, tok, rep = _model("policy", cfg.model, False, objects)
    r = cfg.rollout
    rep.memory_gib = _memory(model, cfg.model, training=False, trainable=0, kv=(r.batch_size, r.max_context_tokens))
    return [rep], dict(split=cfg.split, episodes=cfg.episodes, split_tasks=len(env.tasks(cfg.split)))


# -- memory ----------------------------------------------------------------------------------------

def _memory(model: Any, cfg: ModelConfig, training: bool, trainable: int, kv: tuple[int, int] | None = None,
            act_tokens: tuple[int, int] | None = None, logit_tokens: int = 0,
            scoring: tuple[int, int, int] | None = None) -> dict[str, float]:
    """Estimated GiB per component (see the module docstring)."""
    c = _base_config(model)
    elem = 2 if cfg.dtype in ("auto", "bfloat16", "float16") else 4
    quantized = _quantizable(model) if cfg.quantization == "nf4" else 0
    base = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)
    other_elem = 4 if (training and cfg.quantization == "nf4") else elem
    out = {"weights": (quantized * NF4_BYTES + (base - quantized) * other_elem) / GIB}
    if trainable:
        out["trainable+adam"] = trainable * 16 / GIB
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    if kv:
        out["kv_cache"] = 2 * c.num_hidden_layers * c.num_key_value_heads * head_dim * 2 * kv[0] * kv[1] / GIB
    if act_tokens:
        tokens = act_tokens[0] * act_tokens[1]
        per_token = c.hidden_size if cfg.gradient_checkpointing else 10 * c.hidden_size + 4 * c.intermediate_size
        out["activations"] = c.num_hidden_layers * tokens * per_token * 2 / GIB
    if logit_tokens:
        out["logits"] = logit_tokens * c.vocab_size * 4 * 2 / GIB
    if scoring:  # PolicyRL._score: no-grad forwards for old/reference log-probs, one micro-batch at a time
        episodes, context, sampled = scoring
        out["scoring_pass"] = (episodes * sampled * c.vocab_size * 4 * 2 + episodes * context * c.hidden_size * 2) / GIB
    return {k: round(v, 3) for k, v in out.items()}


def _wm_context(cfg: TrainPolicyConfig) -> int:
    """Experience-model prompt + answer tokens, from the prompt's character limits at ~3.5 chars a token
    plus ~400 tokens of system prompt, instruction and tags."""
    p = cfg.synthetic.prompt
    chars = p.state_chars + p.history_turns * (p.history_state_chars + 120) + p.demos_k * (2 * p.demo_state_chars + 200)
    return int(chars / 3.5) + 400 + cfg.synthetic.max_new_tokens


def _quantizable(model: Any) -> int:
    """Weights bitsandbytes stores in 4 bits: nn.Linear weights of the base model, lm_head excluded."""
    total = 0
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and "lora_" not in name and not name.endswith("lm_head") \
                and "value_head" not in name:
            total += m.weight.numel()
    return total


def _base_config(model: Any) -> Any:
    return model.get_base_model().config if hasattr(model, "get_base_model") else model.config


def _count(module: torch.nn.Module) -> tuple[int, int]:
    params = list(module.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def _groups(opt: torch.optim.Optimizer) -> list[dict[str, Any]]:
    return [{"params": sum(p.numel() for p in g["params"]), "tensors": len(g["params"]), "lr": g["lr"],
             "weight_decay": g["weight_decay"]} for g in opt.param_groups]


if __name__ == "__main__":
    raise SystemExit(main())
