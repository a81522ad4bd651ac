"""Policy-RL configs: curriculum, PPO/GRPO, rollouts, `train-policy`, `evaluate`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from dreamgym.config.loading import ConfigError, SPLITS
from dreamgym.config.envs import EnvConfig
from dreamgym.config.experience import SyntheticEnvConfig
from dreamgym.config.models import ModelConfig

__all__ = ["CurriculumConfig", "AlgoConfig", "PolicyRolloutConfig", "RealEvalConfig", "TrainPolicyConfig", "EvaluateConfig"]


@dataclass
class CurriculumConfig:
    """Curriculum task generator (curriculum/sampler.py): high reward-variance seeds -> task variations."""

    enabled: bool = True
    """generate task variations (False = train on the original train tasks only)"""
    seeds_per_iteration: int = 4
    """k: seed tasks with the highest reward variance V_tau picked per iteration"""
    variations_per_seed: int = 2
    """variations the experience model writes per seed"""
    synthetic_share_cap: float = 0.5
    """lambda: at most this share of an iteration's tasks are generated variations (our default; the
    paper treats lambda as a hyper-parameter)"""
    min_variance: float = 1e-6
    """seeds need V_tau above this (zero-variance tasks carry no learning signal)"""
    max_synthetic: int = 256
    """most variations kept in the pool (the oldest are evicted first)"""
    harder_threshold: float = 0.5
    """seeds whose mean reward is above this get harder variations, below it easier ones"""
    ppo_clusters: int = 8
    """PPO (one rollout per task): tasks are grouped by k-means over instruction embeddings for V_tau"""
    max_new_tokens: int = 96
    """longest task-generation answer"""
    do_sample: bool = True
    """sample the task generator (greedy decoding would write the same variations for a seed every time)"""
    temperature: float = 1.0
    """sampling temperature of the task generator when do_sample"""
    every_n_iterations: int = 1
    """generate variations every N iterations"""
    seed: int = 0
    """seed of task sampling, tie-breaks among equal V_tau, k-means init and task generation"""

    def __post_init__(self) -> None:
        if not 0.0 <= self.synthetic_share_cap <= 1.0:
            raise ConfigError(f"key 'curriculum.synthetic_share_cap': got {self.synthetic_share_cap}, "
                              "expected a share in [0, 1]")
        for key in ("seeds_per_iteration", "variations_per_seed", "max_synthetic", "ppo_clusters",
                    "max_new_tokens", "every_n_iterations"):
            if getattr(self, key) < 1:
                raise ConfigError(f"key 'curriculum.{key}': got {getattr(self, key)}, expected >= 1")
        if not 0.0 <= self.harder_threshold <= 1.0:
            raise ConfigError(f"key 'curriculum.harder_threshold': got {self.harder_threshold}, "
                              "expected a float in [0, 1]")
        if not self.min_variance >= 0.0 or not self.temperature > 0.0:
            raise ConfigError(f"keys 'curriculum.min_variance'/'curriculum.temperature': got {self.min_variance}, "
                              f"{self.temperature}; expected min_variance >= 0 and temperature > 0")


@dataclass
class AlgoConfig:
    """PPO (critic + GAE) or GRPO (group-normalised outcome advantages, no critic)."""

    name: str = "grpo"
    """'ppo' or 'grpo'"""
    group_size: int = 4
    """GRPO: rollouts per task; advantages are normalised inside each group (PPO: 1 rollout per task)"""
    tasks_per_iteration: int = 4
    """distinct tasks per iteration (rollouts = tasks_per_iteration * group_size for GRPO)"""
    update_epochs: int = 2
    """passes over each iteration's rollouts"""
    minibatch_size: int = 4
    """episodes per optimizer step"""
    micro_batch_tokens: int = 4096
    """gradient accumulation inside a minibatch: each forward/backward pass takes at most this many padded
    tokens (longest-first packing, at least one episode; 0 = the whole minibatch at once). The gradient is the
    same; activation memory is bounded (SmolLM2-135M + LoRA in float32: ~2.8 MB a token, so 4 episodes of
    2,048 tokens in one pass need ~23 GB, more than a 24 GB CPU machine)"""
    lr: float = 1e-5
    """AdamW learning rate (LoRA + value head)"""
    weight_decay: float = 0.0
    """AdamW weight decay"""
    clip_eps: float = 0.2
    """PPO ratio clip (lower side, and upper unless clip_eps_high)"""
    clip_eps_high: Optional[float] = None
    """upper ratio clip ("clip-higher"); None = clip_eps"""
    kl_coef: float = 0.0
    """weight of the KL penalty to the reference policy (the base model: adapter disabled)"""
    kl_estimator: str = "k3"
    """k1, k2, k3 or low_var_kl (see rl/losses.py)"""
    entropy_coef: float = 0.0
    """entropy bonus weight"""
    vf_coef: float = 0.5
    """PPO value-loss weight"""
    value_clip: Optional[float] = 0.2
    """PPO value clipping around the old values (None = off)"""
    gamma: float = 1.0
    """PPO discount per sampled token"""
    lam: float = 0.95
    """PPO GAE lambda"""
    max_grad_norm: float = 1.0
    """gradient clipping norm"""
    aggregation: str = "token-mean"
    """token-mean, seq-mean-token-sum or seq-mean-token-mean"""
    target_kl: Optional[float] = None
    """stop an iteration's updates early when approx_kl exceeds this"""
    filter_zero_var: bool = True
    """GRPO: drop groups whose rewards are all equal (no signal) from the update"""
    anneal_lr: bool = False
    """decay the learning rate linearly from lr towards 0 over max_iterations (cleanrl's anneal_lr), so late
    updates of a nearly deterministic policy stay small"""

    def __post_init__(self) -> None:
        if self.name not in ("ppo", "grpo"):
            raise ConfigError(f"key 'algo.name': got {self.name!r}, expected 'ppo' or 'grpo'")
        if self.name == "grpo" and self.group_size < 2:
            raise ConfigError(f"key 'algo.group_size': got {self.group_size}, GRPO needs >= 2")
        if self.kl_estimator not in ("k1", "k2", "k3", "low_var_kl"):
            raise ConfigError(f"key 'algo.kl_estimator': got {self.kl_estimator!r}, expected k1, k2, k3 or low_var_kl")
        if self.aggregation not in ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean"):
            raise ConfigError(f"key 'algo.aggregation': got {self.aggregation!r}, expected token-mean, "
                              "seq-mean-token-sum or seq-mean-token-mean")
        for key in ("tasks_per_iteration", "update_epochs", "minibatch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"key 'algo.{key}': got {getattr(self, key)}, expected >= 1")
        if self.micro_batch_tokens < 0:
            raise ConfigError(f"key 'algo.micro_batch_tokens': got {self.micro_batch_tokens}, expected >= 0 "
                              "(0 = the whole minibatch in one pass)")

    @property
    def rollouts_per_iteration(self) -> int:
        return self.tasks_per_iteration * (self.group_size if self.name == "grpo" else 1)


@dataclass
class PolicyRolloutConfig:
    """How the policy acts during rollouts (rl/rollout.py)."""

    max_turns: int = 15
    """turns per episode (WebShop default 15)"""
    max_new_tokens: int = 32
    """longest action"""
    temperature: float = 1.0
    """sampling temperature of training rollouts (evaluation is greedy)"""
    top_p: float = 1.0
    """nucleus sampling"""
    batch_size: int = 16
    """episodes per generate() call"""
    max_context_tokens: int = 2048
    """an episode whose context would exceed this is cut (truncated)"""
    observation_chars: int = 1200
    """observation text shown per turn"""
    action_space: str = "free"
    """'free': sample any text, parse an action from it; 'choice': decoding constrained to exactly one of the
    available actions (+ end token), log-probs renormalised over the allowed ids (`search[...]` becomes
    `search[<task instruction>]`); max_new_tokens then does not apply"""
    backend: str = "auto"
    """generation backend: 'engine' (KV engine: in-place cache reused across turns and group samples),
    'hf' (HF generate on the whole history each turn), 'auto' (engine where the model supports it)"""

    def __post_init__(self) -> None:
        if self.action_space not in ("free", "choice"):
            raise ConfigError(f"key 'rollout.action_space': got {self.action_space!r}, expected 'free' or 'choice'")
        if self.backend not in ("auto", "engine", "hf"):
            raise ConfigError(f"key 'rollout.backend': got {self.backend!r}, expected 'auto', 'engine' or 'hf'")


@dataclass
class RealEvalConfig:
    """Reality check while training in the synthetic env: greedy episodes in the real env."""

    every_n_iterations: int = 0
    """0 = off; else evaluate on the real env every N iterations (eval/success_rate, eval/sim_real_gap)"""
    episodes: int = 8
    """real episodes per evaluation"""
    split: str = "dev"
    """real env split used for evaluation"""


@dataclass
class TrainPolicyConfig:
    """`dreamgym train-policy`: PPO/GRPO in the synthetic env (experience model + buffer) or a real env."""

    train_env: str = "synthetic"
    """'synthetic' (the experience model answers; needs --world-model, --buffer optional) or 'real'"""
    env: EnvConfig = field(default_factory=EnvConfig)
    """the real env: tasks and start pages (synthetic), or where training happens (real)"""
    synthetic: SyntheticEnvConfig = field(default_factory=SyntheticEnvConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    """the policy (LoRA on this base)"""
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    rollout: PolicyRolloutConfig = field(default_factory=PolicyRolloutConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    eval: RealEvalConfig = field(default_factory=RealEvalConfig)
    max_iterations: int = 10
    """RL iterations (one batch of rollouts + its updates each)"""
    checkpoint_every: int = 5
    """save a Lightning checkpoint (and the buffer copy) every N iterations"""
    real_transition_budget: Optional[int] = None
    """train_env=real: stop once this many real transitions were used (None = no cap)"""
    seed: int = 0
    """seed of everything (tasks, sampling, minibatch order)"""

    def __post_init__(self) -> None:
        if self.train_env not in ("synthetic", "real"):
            raise ConfigError(f"key 'train_env': got {self.train_env!r}, expected 'synthetic' or 'real'")
        if self.max_iterations < 1 or self.checkpoint_every < 1:
            raise ConfigError("keys 'max_iterations'/'checkpoint_every': expected positive integers")


@dataclass
class EvaluateConfig:
    """`dreamgym evaluate`: a policy in a real env split, with oracle and random reference rows."""

    env: EnvConfig = field(default_factory=EnvConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    """base model of an LLM policy (its adapter comes from --policy)"""
    rollout: PolicyRolloutConfig = field(default_factory=PolicyRolloutConfig)
    """how the policy acts (evaluation decodes greedily)"""
    split: str = "test"
    """real env split"""
    episodes: int = 100
    """episodes (tasks of the split in order)"""
    references: bool = True
    """also evaluate the oracle and random policies on the same tasks (reference rows)"""
    seed: int = 0
    """seed of the random reference policy"""

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ConfigError(f"key 'split': got {self.split!r}, expected one of {', '.join(SPLITS)}")
        if self.episodes < 1:
            raise ConfigError(f"key 'episodes': got {self.episodes}, expected >= 1")
