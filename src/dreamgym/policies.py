"""Scripted policies for `collect` and as reference rows in `evaluate`: `random` (uniform over the
available actions) and `oracle` (the env's own, from `env.oracle()`); for `collect` also `noisy-oracle`
(`NoisyPolicy` around the oracle: each step a random action with probability epsilon). Near-miss episodes
are what an experience model needs to learn that not every purchase succeeds: the oracle's purchases all
get reward 1.0 and random episodes rarely buy, so without them the model learns "a purchase succeeds".

A policy sees only what an agent sees: the observation text and the available actions (plus the task
at `reset`). The random policy fills `search[...]` with the task instruction (there is nothing to
sample a query from) and is reseeded per episode from (seed, task id), so any episode can be replayed.
"""

from __future__ import annotations

import random
import zlib

from dreamgym.envs.base import Policy
from dreamgym.errors import DreamGymError
from dreamgym.types import Task

__all__ = ["RandomPolicy", "NoisyPolicy", "make_policy", "SCRIPTED_POLICIES", "COLLECT_POLICIES"]

SCRIPTED_POLICIES = ("oracle", "random")
"""the reference rows of `evaluate`"""
COLLECT_POLICIES = ("oracle", "random", "noisy-oracle")
"""what `collect` can run"""


class RandomPolicy:
    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.rng = random.Random(seed)
        self.task: Task | None = None

    def reset(self, task: Task) -> None:
        self.task = task
        self.rng = random.Random(zlib.crc32(f"{self.seed}:{task.id}".encode()))

    def act(self, observation: str, available_actions: list[str]) -> str:
        if not available_actions:
            return "noop"
        action = self.rng.choice(available_actions)
        if action.endswith("[...]") and self.task is not None:
            action = action[: -len("...]")] + self.task.instruction + "]"
        return action


class NoisyPolicy:
    """`inner` with, at each step, probability `epsilon` of a uniformly random available action instead
    (drawn by a `RandomPolicy`). The inner policy is only asked on its own steps, so a stateful one (the
    WebShop oracle) keeps its plan and recovers where it can (going back from a wrong product), or buys
    with a wrong option or too early: failed purchases with partial reward. Seeded per (seed, task id)."""

    def __init__(self, inner: Policy, epsilon: float, seed: int = 0):
        if not 0.0 <= epsilon <= 1.0:
            raise DreamGymError(f"key 'epsilon': got {epsilon}, expected a probability in [0, 1]")
        self.inner, self.epsilon, self.seed = inner, epsilon, seed
        self.name = f"noisy-{getattr(inner, 'name', 'policy')}"
        self.random = RandomPolicy(seed + 1)
        self.rng = random.Random(seed)

    def reset(self, task: Task) -> None:
        self.inner.reset(task)
        self.random.reset(task)
        self.rng = random.Random(zlib.crc32(f"noise:{self.seed}:{task.id}".encode()))

    def act(self, observation: str, available_actions: list[str]) -> str:
        if available_actions and self.rng.random() < self.epsilon:
            return self.random.act(observation, available_actions)
        return self.inner.act(observation, available_actions)


def make_policy(name: str, env: object, seed: int = 0, epsilon: float = 0.2) -> Policy:
    """A scripted policy by name (COLLECT_POLICIES); `oracle` asks the env for its own; `noisy-oracle` wraps
    it in `NoisyPolicy(epsilon)`."""
    if name == "random":
        return RandomPolicy(seed)
    if name in ("oracle", "noisy-oracle"):
        oracle = env.oracle() if hasattr(env, "oracle") else None
        if oracle is None:
            raise DreamGymError(f"key 'policy': env {type(env).__name__} has no scripted oracle")
        return oracle if name == "oracle" else NoisyPolicy(oracle, epsilon, seed)
    raise DreamGymError(f"key 'policy': unknown policy {name!r}, expected one of {', '.join(COLLECT_POLICIES)}")
