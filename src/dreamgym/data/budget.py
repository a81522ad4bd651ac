"""A hard cap on real env transitions: `BudgetedVectorEnv` wraps a real VectorEnv (`EnvPool`) so a rollout
never takes more env steps than the budget has left, even in the middle of an iteration.

`remaining()` (the run's budget minus the real transitions its ledger already holds) is read at every
`reset`; each `step` then forwards at most that many of the running episodes' actions to the real env, in
order, and ends the others without touching the env: their answer is the unchanged observation, reward 0,
done, `info = {"truncated": True, "budget_exhausted": True}`. Such steps are not transitions: the ledger
does not count them (`real_step_count`) and they never reach rollouts.jsonl or the replay buffer
(`strip_budget_steps`); their episodes end truncated (outcome 0), like episodes cut at the turn limit.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Iterable

from dreamgym.types import StepResult, Task, Trajectory

__all__ = ["BudgetedVectorEnv", "BUDGET_FLAG", "real_step_count", "strip_budget_steps"]

BUDGET_FLAG = "budget_exhausted"


class BudgetedVectorEnv:
    """The VectorEnv interface of the wrapped env, with at most `remaining()` real steps per rollout."""

    def __init__(self, venv: Any, remaining: Callable[[], int]):
        self.venv, self.remaining = venv, remaining
        self._left = 0
        self._obs: dict[int, str] = {}
        self.cut_steps = 0
        """episodes ended by the budget so far (this process)"""

    @property
    def name(self) -> str:
        return getattr(self.venv, "name", type(self.venv).__name__)

    @property
    def running(self) -> list[int]:
        return self.venv.running

    def reset(self, tasks: list[Task]) -> list[StepResult]:
        self._left = max(0, int(self.remaining()))
        results = self.venv.reset(tasks)
        self._obs = {i: r.observation for i, r in enumerate(results)}
        return results

    def available_actions(self) -> list[list[str]]:
        return self.venv.available_actions()

    def step(self, actions: list[str]) -> list[StepResult]:
        live = list(self.venv.running)
        n_real = min(len(live), self._left)
        for i in live[n_real:]:  # out of budget: end these before the env sees their actions
            self.venv.end(i)
        results = self.venv.step(list(actions[:n_real])) if n_real else []
        self._left -= n_real
        for i, r in zip(live, results):
            self._obs[i] = r.observation
        cut = [StepResult(self._obs.get(i, ""), 0.0, True, {"truncated": True, BUDGET_FLAG: True}) for i in live[n_real:]]
        self.cut_steps += len(cut)
        return list(results) + cut

    def end(self, index: int) -> None:
        self.venv.end(index)

    def close(self) -> None:
        self.venv.close()


def real_step_count(steps: Iterable[Any]) -> int:
    """Steps that were real env transitions (not ended by the budget)."""
    return sum(1 for s in steps if not s.info.get(BUDGET_FLAG))


def strip_budget_steps(traj: Trajectory) -> Trajectory:
    """The trajectory without its budget-ended step (if any); the episode then ends cut off, not done."""
    if not traj.steps or not traj.steps[-1].info.get(BUDGET_FLAG):
        return traj
    steps = traj.steps[:-1]
    if steps:
        steps[-1] = replace(steps[-1], info={**steps[-1].info, "truncated": True})
    return replace(traj, steps=steps, final_observation=traj.steps[-1].observation, final_reward=0.0, success=False)
