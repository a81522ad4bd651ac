"""Typed dataclass configs, one module per concern, merged with OmegaConf by `load_config`:
defaults <- each `-c FILE` (its `includes:` first) <- `key=value` overrides. Every command has one
top-level config class; the CLI loads it and passes the typed object to its pipeline.

  loading     load_config, to_yaml, ConfigError, SPLITS
  envs        WebShopConfig, HttpConfig, EnvConfig, CollectConfig, ServeEnvConfig
  models      LoraSettings, ModelConfig
  replay      ReplayConfig, BufferBuildConfig
  experience  ExperiencePromptConfig, AnnotateConfig, SyntheticEnvConfig, SFTSettings, FitWorldModelConfig,
              EvalWorldModelConfig
  rl          CurriculumConfig, AlgoConfig, PolicyRolloutConfig, RealEvalConfig, TrainPolicyConfig, EvaluateConfig
  baselines   OfflineTrainSettings, DPOSettings, SFTPolicyConfig, DPOPolicyConfig, S2RSettings, S2RConfig
  sweep       SweepConfig
"""

from dreamgym.config.envs import CollectConfig, EnvConfig, HttpConfig, ServeEnvConfig, WebShopConfig
from dreamgym.config.experience import (AnnotateConfig, EvalWorldModelConfig, ExperiencePromptConfig,
                                        FitWorldModelConfig, SFTSettings, SyntheticEnvConfig)
from dreamgym.config.loading import SPLITS, ConfigError, load_config, to_yaml
from dreamgym.config.models import LoraSettings, ModelConfig
from dreamgym.config.replay import BufferBuildConfig, ReplayConfig
from dreamgym.config.rl import (AlgoConfig, CurriculumConfig, EvaluateConfig, PolicyRolloutConfig, RealEvalConfig,
                                TrainPolicyConfig)
from dreamgym.config.baselines import (DPOPolicyConfig, DPOSettings, OfflineTrainSettings, S2RConfig, S2RSettings,
                                       SFTPolicyConfig)
from dreamgym.config.sweep import SweepConfig

__all__ = ['ConfigError', 'SPLITS', 'load_config', 'to_yaml', 'WebShopConfig', 'HttpConfig', 'EnvConfig', 'CollectConfig', 'ServeEnvConfig', 'LoraSettings', 'ModelConfig', 'ReplayConfig', 'BufferBuildConfig', 'ExperiencePromptConfig', 'AnnotateConfig', 'SyntheticEnvConfig', 'SFTSettings', 'FitWorldModelConfig', 'EvalWorldModelConfig', 'CurriculumConfig', 'AlgoConfig', 'PolicyRolloutConfig', 'RealEvalConfig', 'TrainPolicyConfig', 'EvaluateConfig', 'OfflineTrainSettings', 'DPOSettings', 'SFTPolicyConfig', 'DPOPolicyConfig', 'S2RSettings', 'S2RConfig', 'SweepConfig']
