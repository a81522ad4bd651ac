"""Configs of the offline policy baselines and of S2R: `sft-policy` (behaviour cloning on offline oracle
trajectories, the common warm start), `dpo-policy` (DPO on preference pairs built from the same data) and
`s2r` (synthetic-env RL, then RL in the real env under a real-transition budget)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from dreamgym.config.envs import EnvConfig
from dreamgym.config.loading import SPLITS, ConfigError
from dreamgym.config.models import ModelConfig
from dreamgym.config.rl import PolicyRolloutConfig, TrainPolicyConfig

__all__ = ["OfflineTrainSettings", "DPOSettings", "SFTPolicyConfig", "DPOPolicyConfig", "S2RSettings", "S2RConfig"]


@dataclass
class OfflineTrainSettings:
    """Optimizer and batching of offline policy training (SFT and DPO)."""

    lr: float = 2e-4
    """AdamW learning rate (LoRA-sized)"""
    weight_decay: float = 0.0
    """AdamW weight decay on the adapter matrices"""
    batch_size: int = 4
    """examples (SFT: episodes; DPO: preference pairs) per optimizer step"""
    max_epochs: int = 3
    """passes over the training examples"""
    max_steps: int = -1
    """optimizer steps (-1 = no step limit, max_epochs decides)"""
    max_grad_norm: float = 1.0
    """clip the global gradient norm to this (0 = off)"""
    micro_batch_tokens: int = 4096
    """padded tokens per forward/backward pass: a batch's gradient is accumulated over micro-batches of at most
    this many (longest examples first; a DPO pair stays together), the same gradient as one pass with the
    activation memory of one micro-batch (0 = the whole batch at once). SmolLM2-135M + LoRA in float32 keeps
    ~2.8 MB of activations per token on CPU: 4 episodes of 2,000 tokens in one pass need ~22 GB"""
    val_fraction: float = 0.1
    """share of trajectories held out for the validation loss (split by task id, seeded)"""
    only_success: bool = True
    """keep only successful trajectories as demonstrations (SFT) and as sources of chosen actions (DPO)"""
    bucket_megabatch: int = 8
    """length bucketing: shuffle, cut into megabatches of this many batches, sort each by length (1 = off)"""
    checkpoint_every_n_steps: int = 20
    """also write checkpoints/last.ckpt every this many optimizer steps (0 = only at epoch ends), so a run
    stopped mid-epoch (a chunk's `timeout`) resumes there; the epoch's batch order continues where it stopped"""
    progress: bool = True
    """show the rich progress bar"""

    def __post_init__(self) -> None:
        if not self.lr > 0 or self.batch_size < 1 or self.max_epochs < 1:
            raise ConfigError(f"keys 'train.lr'/'train.batch_size'/'train.max_epochs': got {self.lr}, "
                              f"{self.batch_size}, {self.max_epochs}; expected lr > 0 and positive integers")
        if self.checkpoint_every_n_steps < 0:
            raise ConfigError(f"key 'train.checkpoint_every_n_steps': got {self.checkpoint_every_n_steps}, "
                              "expected an int >= 0 (0 = only at epoch ends)")
        if self.micro_batch_tokens < 0:
            raise ConfigError(f"key 'train.micro_batch_tokens': got {self.micro_batch_tokens}, expected an int >= 0 "
                              "(0 = the whole batch in one pass)")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"key 'train.val_fraction': got {self.val_fraction}, expected a share in [0, 1)")


@dataclass
class DPOSettings:
    """The DPO objective (rl/dpo.py) and how rejected actions are found (rl/sft_data.py)."""

    beta: float = 0.1
    """DPO temperature: the implicit reward is beta * log(pi / pi_ref)"""
    label_smoothing: float = 0.0
    """conservative DPO: assumed share of flipped preference labels in [0, 0.5)"""
    rejected_from: str = "failed_then_random"
    """'failed_then_random': at a demonstrated state, the action a failed trajectory took there (when any
    differs from the chosen one), else a seeded random available action; 'random': always the latter"""

    def __post_init__(self) -> None:
        if not self.beta > 0:
            raise ConfigError(f"key 'dpo.beta': got {self.beta}, expected > 0")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ConfigError(f"key 'dpo.label_smoothing': got {self.label_smoothing}, expected a value in [0, 0.5)")
        if self.rejected_from not in ("failed_then_random", "random"):
            raise ConfigError(f"key 'dpo.rejected_from': got {self.rejected_from!r}, expected "
                              "'failed_then_random' or 'random'")


@dataclass
class SFTPolicyConfig:
    """`dreamgym sft-policy`: behaviour cloning of the LoRA policy on offline (oracle) trajectories, in the
    exact chat layout of the rollout loop (so RL later sees what SFT trained on)."""

    env: EnvConfig = field(default_factory=EnvConfig)
    """the real env the demonstrations come from (recorded; its name must match the trajectories')"""
    model: ModelConfig = field(default_factory=ModelConfig)
    """the policy (LoRA on this base)"""
    rollout: PolicyRolloutConfig = field(default_factory=PolicyRolloutConfig)
    """the context layout the policy will act in: observation_chars, max_context_tokens and action_space
    must equal those of the RL runs that start from this adapter"""
    train: OfflineTrainSettings = field(default_factory=OfflineTrainSettings)
    seed: int = 0
    """seed of the validation split, batch order and LoRA init"""


@dataclass
class DPOPolicyConfig(SFTPolicyConfig):
    """`dreamgym dpo-policy`: DPO on preference pairs from offline trajectories (chosen = the demonstrated
    action, rejected = a failed or random action at the same state)."""

    dpo: DPOSettings = field(default_factory=DPOSettings)


@dataclass
class S2RSettings:
    """Sim-to-real: phase 1 trains in the synthetic env, phase 2 continues in the real env on a budget."""

    real_budget: Optional[int] = None
    """real env transitions (env steps) phase 2 may use; None = real_budget_fraction of the reference"""
    real_budget_fraction: float = 0.1
    """with real_budget None: this share of the most real transitions a real-only run with the same config
    can use, max_iterations * rollouts per iteration * rollout.max_turns (rounded up)"""
    real_max_iterations: int = 1000
    """upper bound of phase-2 iterations (the budget normally ends phase 2 first)"""
    eval_episodes: int = 20
    """greedy real-env episodes of each before/after evaluation (0 = skip the evaluations)"""
    eval_split: str = "dev"
    """real env split of the before/after evaluations"""

    def __post_init__(self) -> None:
        if not 0.0 < self.real_budget_fraction <= 1.0:
            raise ConfigError(f"key 's2r.real_budget_fraction': got {self.real_budget_fraction}, expected (0, 1]")
        if self.real_budget is not None and self.real_budget < 1:
            raise ConfigError(f"key 's2r.real_budget': got {self.real_budget}, expected a positive int or null")
        if self.real_max_iterations < 1 or self.eval_episodes < 0:
            raise ConfigError("keys 's2r.real_max_iterations'/'s2r.eval_episodes': expected >= 1 / >= 0")
        if self.eval_split not in SPLITS:
            raise ConfigError(f"key 's2r.eval_split': got {self.eval_split!r}, expected one of {', '.join(SPLITS)}")


@dataclass
class S2RConfig(TrainPolicyConfig):
    """`dreamgym s2r`: every train-policy key (the same presets work; `train_env` is set per phase, and
    max_iterations is phase 1's) plus the `s2r` group."""

    s2r: S2RSettings = field(default_factory=S2RSettings)

    def train_policy_config(self, phase: str) -> TrainPolicyConfig:
        """The train-policy config of a phase: 'synthetic' (as given) or 'real' (budget-capped, no periodic
        real evaluation: its episodes would spend the budget)."""
        from dataclasses import fields, replace

        base = TrainPolicyConfig(**{f.name: getattr(self, f.name) for f in fields(TrainPolicyConfig)})
        if phase == "synthetic":
            return replace(base, train_env="synthetic", real_transition_budget=None)
        if phase == "real":
            return replace(base, train_env="real", real_transition_budget=self.real_budget(),
                           max_iterations=self.s2r.real_max_iterations, eval=replace(base.eval, every_n_iterations=0))
        raise ValueError(f"phase {phase!r}, expected 'synthetic' or 'real'")

    def real_budget_reference(self) -> int:
        """The most real transitions a real-only run with this config can use."""
        return self.max_iterations * self.algo.rollouts_per_iteration * self.rollout.max_turns

    def real_budget(self) -> int:
        import math

        if self.s2r.real_budget is not None:
            return self.s2r.real_budget
        return max(1, math.ceil(self.s2r.real_budget_fraction * self.real_budget_reference()))
