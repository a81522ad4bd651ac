"""Scripted policies for `collect` and as reference rows in `evaluate`: `random` (uniform over the
available actions) and `oracle` (the env's own, from `env.oracle()`). Learned policies come later.

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

__all__ = ["RandomPolicy", "make_policy", "SCRIPTED_POLICIES"]

SCRIPTED_POLICIES = ("oracle", "random")


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


def make_policy(name: str, env: object, seed: int = 0) -> Policy:
    """A scripted policy by name; `oracle` asks the env for its own."""
    if name == "random":
        return RandomPolicy(seed)
    if name == "oracle":
        oracle = env.oracle() if hasattr(env, "oracle") else None
        if oracle is None:
            raise DreamGymError(f"key 'policy': env {type(env).__name__} has no scripted oracle")
        return oracle
    raise DreamGymError(f"key 'policy': unknown policy {name!r}, expected one of {', '.join(SCRIPTED_POLICIES)}")
