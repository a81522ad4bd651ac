"""Play one episode of a text policy in an Env and record it as a Trajectory (schema 1).

Used by `collect` (scripted policies) and by evaluation rows for scripted policies; the LLM rollout
loop (rl/rollout.py) batches many episodes and keeps token ids, but writes the same records.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from dreamgym.envs.base import Policy
from dreamgym.types import Step, Task, Trajectory

__all__ = ["run_episode", "EpisodeTiming", "is_success"]


@dataclass
class EpisodeTiming:
    """Seconds spent inside env.reset/env.step (the env's own cost) vs the policy."""

    env_s: float = 0.0
    policy_s: float = 0.0
    steps: int = 0


def is_success(final_reward: float, info: dict) -> bool:
    """An env may say so in info['success']; otherwise success means the outcome reward is 1.0."""
    if "success" in info:
        return bool(info["success"])
    return final_reward >= 1.0


def run_episode(env, policy: Policy, task: Task, max_turns: int, seed: int = 0, episode: int = 0,
                timing: EpisodeTiming | None = None) -> Trajectory:
    """Reset, then act until done or `max_turns` actions; every step keeps what the agent saw before acting."""
    timing = timing or EpisodeTiming()
    t0 = time.perf_counter()
    result = env.reset(task)
    timing.env_s += time.perf_counter() - t0
    policy.reset(task)
    steps: list[Step] = []
    observation, last_info, final_reward = result.observation, {}, 0.0
    for t in range(max_turns):
        actions = env.available_actions()
        t1 = time.perf_counter()
        action = policy.act(observation, actions)
        t2 = time.perf_counter()
        result = env.step(action)
        timing.env_s += time.perf_counter() - t2
        timing.policy_s += t2 - t1
        timing.steps += 1
        steps.append(Step(t=t, observation=observation, available_actions=actions, action=action,
                          reward=float(result.reward), done=bool(result.done), info=dict(result.info)))
        observation, last_info, final_reward = result.observation, result.info, float(result.reward)
        if result.done:
            break
    done = bool(steps and steps[-1].done)
    success = done and is_success(final_reward, last_info)
    return Trajectory(id=f"{task.env}-{task.split}-{_task_num(task.id)}-{policy.name}-{episode}", source="real",
                      env=task.env, task=task, steps=steps, final_reward=final_reward if done else 0.0,
                      success=success, policy=policy.name, seed=seed, final_observation=observation)


def _task_num(task_id: str) -> str:
    tail = task_id.rsplit(":", 1)[-1]
    return f"{int(tail):05d}" if tail.isdigit() else tail.replace("/", "_")
