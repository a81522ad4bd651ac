"""The learning test that cannot pass by chance (issue 6): GRPO and PPO, through the real `train_policy`
pipeline, teach the tiny random policy the one door sequence of a `choice-corridor` (3 rooms x 3 doors;
chance: 1/27 = 3.7%), with actions restricted to the available ones (`rollout.action_space=choice`).

Success is measured outside training with the rollout loop: greedy (the policy's single best path) and
sampled at the training temperature (64 episodes), on the untrained policy and on the exported adapter.
Untrained: both < 0.2. Trained: both > 0.8. The config is `configs/policy/toy_choice.yaml` (25 iterations
of 16 rollouts); seeds 0-7 all pass (checked when the test was written), the test uses seed 0.
"""

import pytest

from dreamgym.config import TrainPolicyConfig, load_config
from dreamgym.envs.base import make_env
from dreamgym.envs.vector import EnvPool
from dreamgym.models.loading import load_adapter, load_model
from dreamgym.pipelines.train_policy import train_policy
from dreamgym.rl.context import ChatContext
from dreamgym.rl.rollout import RolloutSettings, run_rollouts

PRESET = "configs/policy/toy_choice.yaml"
ALGO_OVERRIDES = {"grpo": [], "ppo": ["algo.name=ppo", "algo.tasks_per_iteration=16"]}


def _success(model, tok, cfg: TrainPolicyConfig) -> tuple[float, float]:
    """(greedy, sampled) success rate of a policy on the corridor."""
    env = make_env(cfg.env)
    task = env.tasks("train")[0]
    rates = []
    for do_sample, episodes in ((False, 1), (True, 64)):  # greedy is deterministic: one episode says it all
        settings = RolloutSettings(max_turns=cfg.rollout.max_turns, do_sample=do_sample,
                                   temperature=cfg.rollout.temperature, batch_size=64, seed=1234,
                                   action_space="choice")
        result = run_rollouts(model, tok, ChatContext(tok), EnvPool(env), [task] * episodes, settings)
        rates.append(result.metrics()["rollout/success_rate"])
    return rates[0], rates[1]


@pytest.mark.parametrize("algo", ["grpo", "ppo"])
def test_rl_raises_corridor_success_from_chance_to_near_certain(algo, tmp_path):
    cfg = load_config(TrainPolicyConfig, [PRESET], ALGO_OVERRIDES[algo])
    untrained, tok = load_model(cfg.model, for_training=True)  # a fresh adapter is the identity (LoRA B = 0)
    greedy_before, sampled_before = _success(untrained, tok, cfg)
    summary = train_policy(cfg, run_dir=tmp_path / "run", progress=False)
    trained, tok = load_adapter(cfg.model, summary["adapter_dir"])
    greedy_after, sampled_after = _success(trained, tok, cfg)
    report = f"{algo}: greedy {greedy_before} -> {greedy_after}, sampled {sampled_before:.2f} -> {sampled_after:.2f}"
    assert greedy_before < 0.2 and sampled_before < 0.2, report
    assert greedy_after > 0.8 and sampled_after > 0.8, report
    assert summary["iterations"] == cfg.max_iterations and summary["success_rate_first"] < 0.2, summary
