"""Config of `dreamgym quickstart`: the whole DreamGym loop at smoke scale, one command (collect, buffer,
experience model, SFT warm start, S2R, a real-only baseline at the same real budget, evaluations, report).
Step settings come from presets (the same files the individual commands take) plus per-step overrides;
the quickstart config itself only holds sizes and which presets to use."""

from __future__ import annotations

from dataclasses import dataclass, field

from dreamgym.config.envs import EnvConfig
from dreamgym.config.loading import SPLITS, ConfigError

__all__ = ["QuickstartConfig"]


@dataclass
class QuickstartConfig:
    """Sizes of the smoke-scale loop and the presets of its steps (paths relative to the working directory,
    else to the source checkout)."""

    env: EnvConfig = field(default_factory=EnvConfig)
    """the real env (its train split feeds every offline step, `eval_split` the comparison)"""
    demos: int = 40
    """oracle episodes collected on the train split: the buffer seed, the experience model's data, SFT demos"""
    failures: int = 20
    """random-policy episodes on the train split: failed transitions for the buffer and the experience model"""
    near_misses: int = 0
    """noisy-oracle episodes on the train split (`collect --policy noisy-oracle`): near misses such as failed
    purchases with partial reward, for the buffer and the experience model (0 = none). Without them the model
    sees almost only successful purchases (random episodes rarely buy) and learns that every purchase succeeds"""
    near_miss_epsilon: float = 0.3
    """per-step probability of a random action in the near-miss episodes"""
    eval_episodes: int = 10
    """greedy real-env episodes per evaluated policy (the same first tasks of `eval_split` for every row)"""
    eval_split: str = "test"
    """real env split of the comparison"""
    teacher: str = "rule"
    """`annotate` teacher of the experience model's SFT set: 'rule' (deterministic rationales), 'model' (the
    embedded LLM; slow on CPU) or 'none'; rationales are trained only where the world-model prompt has
    reasoning on (the quickstart presets: off)"""
    world_model_presets: list[str] = field(default_factory=lambda: ["configs/quickstart/world_model.yaml"])
    """fit-world-model presets"""
    sft_presets: list[str] = field(default_factory=lambda: ["configs/quickstart/sft.yaml"])
    """sft-policy presets (the SFT warm start every RL method starts from)"""
    rl_presets: list[str] = field(default_factory=lambda: ["configs/quickstart/rl.yaml"])
    """s2r / train-policy presets (phase 1 synthetic, phase 2 real; the real-only baseline uses the same)"""
    world_model_overrides: list[str] = field(default_factory=list)
    """key=value overrides of the fit-world-model step"""
    sft_overrides: list[str] = field(default_factory=list)
    """key=value overrides of the sft-policy step"""
    rl_overrides: list[str] = field(default_factory=list)
    """key=value overrides of the s2r and real-only steps"""
    seed: int = 0
    """seed of every step"""

    def __post_init__(self) -> None:
        if self.demos < 2 or self.failures < 0 or self.eval_episodes < 1:
            raise ConfigError(f"keys 'demos'/'failures'/'eval_episodes': got {self.demos}, {self.failures}, "
                              f"{self.eval_episodes}; expected demos >= 2, failures >= 0, eval_episodes >= 1")
        if self.near_misses < 0 or not 0.0 <= self.near_miss_epsilon <= 1.0:
            raise ConfigError(f"keys 'near_misses'/'near_miss_epsilon': got {self.near_misses}, "
                              f"{self.near_miss_epsilon}; expected near_misses >= 0 and epsilon in [0, 1]")
        if self.teacher not in ("rule", "model", "none"):
            raise ConfigError(f"key 'teacher': got {self.teacher!r}, expected 'rule', 'model' or 'none'")
        if self.eval_split not in SPLITS:
            raise ConfigError(f"key 'eval_split': got {self.eval_split!r}, expected one of {', '.join(SPLITS)}")
