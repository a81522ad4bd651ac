"""A user's own environment, plugged into dreamgym without editing it: `--env examples.my_env.counter_env:CounterEnv`.

The agent moves a counter from 0 to a target with `increment` / `decrement` and then says `submit`;
submitting on the target wins (reward 1.0), submitting anywhere else loses (reward 0.0). It shows
everything the Env protocol asks for (docs/environments.md): `tasks(split)`, `reset(task)`,
`step(action)`, `available_actions()`, `close()`, plus the optional `oracle()` (for `--policy oracle`)
and `spawn()` (independent copies, for `evaluate` and batched rollouts). Settings come from
`env.kwargs.*` (`Class(**env.kwargs)`), e.g. `env.kwargs.max_target=5`.

It subclasses nothing: any class with these methods works. Run it from the repository root with the
folder on the import path:

    PYTHONPATH=. dreamgym collect --env examples.my_env.counter_env:CounterEnv --policy oracle --episodes 20
"""

from __future__ import annotations

import random

from dreamgym.types import StepResult, Task

__all__ = ["CounterEnv", "CounterOracle"]

ACTIONS = ["increment", "decrement", "submit"]


class CounterEnv:
    name = "counter"

    def __init__(self, max_target: int = 3, num_tasks: int = 10, max_steps: int = 10, seed: int = 0):
        self.max_target, self.num_tasks, self.max_steps, self.seed = max_target, num_tasks, max_steps, seed
        self.task: Task | None = None
        self.value, self.steps, self.done = 0, 0, True

    # -- the Env protocol -------------------------------------------------------------------------
    def tasks(self, split: str) -> list[Task]:
        """A fixed list per split: targets drawn with a seed that depends on the split."""
        rng = random.Random(f"{self.seed}:{split}")
        targets = [rng.randint(1, self.max_target) for _ in range(self.num_tasks)]
        return [Task(id=f"counter:{split}-{i}", instruction=f"Set the counter to {t}, then submit.", env="counter",
                     split=split, goal={"target": t}) for i, t in enumerate(targets)]

    def reset(self, task: Task) -> StepResult:
        self.task, self.value, self.steps, self.done = task, 0, 0, False
        return StepResult(self._observation())

    def step(self, action: str) -> StepResult:
        if self.task is None or self.done:
            raise RuntimeError("counter: step() before reset() or after the episode ended")
        self.steps += 1
        if action not in ACTIONS:  # invalid: state unchanged, not done, flagged (the contract's convention)
            return StepResult(self._observation(), 0.0, self.steps >= self.max_steps, {"invalid_action": True})
        if action == "submit":
            self.done = True
            won = self.value == self.task.goal["target"]
            return StepResult(f"Submitted {self.value}. {'Correct!' if won else 'Wrong.'}", float(won), True,
                              {"success": won})
        self.value += 1 if action == "increment" else -1
        self.done = self.steps >= self.max_steps
        return StepResult(self._observation(), 0.0, self.done, {"truncated": True} if self.done else {})

    def available_actions(self) -> list[str]:
        return [] if self.done else list(ACTIONS)

    def close(self) -> None:
        self.task, self.done = None, True

    # -- optional extras --------------------------------------------------------------------------
    def oracle(self) -> "CounterOracle":
        return CounterOracle()

    def spawn(self) -> "CounterEnv":
        return CounterEnv(self.max_target, self.num_tasks, self.max_steps, self.seed)

    def _observation(self) -> str:
        return f"Counter: {self.value}. Target: {self.task.goal['target']}."  # type: ignore[union-attr]


class CounterOracle:
    """Scripted policy: reads the counter from the observation and steps toward the target."""

    name = "oracle"

    def reset(self, task: Task) -> None:
        self.target = task.goal["target"]

    def act(self, observation: str, available_actions: list[str]) -> str:
        value = int(observation.split("Counter: ")[1].split(".")[0])
        return "submit" if value == self.target else "increment" if value < self.target else "decrement"
