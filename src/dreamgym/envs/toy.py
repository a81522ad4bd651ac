"""`choice-corridor`: a tiny deterministic env for learning tests and smoke runs (no data, no server).

The agent walks through `turns` rooms. Each room shows its doors, e.g. "Room 2 of 3. Doors: blue, red,
green.", and the available actions `click[<colour>]` in the shown order (shuffled per room with a fixed
seed, so position alone does not tell). Exactly one door per room leads on; the task fixes which (its
`goal["doors"]`, never the same colour in two consecutive rooms), and no observation or instruction
states it: it can only be learned from reward. A
wrong door ends the episode with reward 0, passing every room gives reward 1 (success). An action that
is not an available one: reward 0, not done, `info["invalid_action"] = True`, the room unchanged.

A uniformly random policy succeeds with probability (1 / n_doors) ** turns (3.7% for 3 x 3). Every split
holds the same `num_tasks` corridors (there is nothing to generalise to; the dev/test splits exist so
`evaluate` and periodic evaluation work). Settings come from `env.kwargs` (turns, n_doors, num_tasks, seed).
"""

from __future__ import annotations

import random
import re
from typing import Any

from dreamgym.envs.base import Env, register_env
from dreamgym.errors import DreamGymError
from dreamgym.types import StepResult, Task

__all__ = ["ChoiceCorridorEnv", "CorridorOracle", "COLOURS"]

COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black")
_ROOM = re.compile(r"Room (\d+) of \d+")


@register_env("choice-corridor")
class ChoiceCorridorEnv(Env):
    """One episode at a time; `spawn()` makes independent siblings for `EnvPool`."""

    name = "choice-corridor"

    def __init__(self, turns: int = 3, n_doors: int = 3, num_tasks: int = 1, seed: int = 0):
        if turns < 1 or not 2 <= n_doors <= len(COLOURS) or num_tasks < 1:
            raise DreamGymError(f"key 'env.kwargs': got turns={turns}, n_doors={n_doors}, num_tasks={num_tasks}; "
                                f"expected turns >= 1, 2 <= n_doors <= {len(COLOURS)}, num_tasks >= 1")
        self.turns, self.n_doors, self.num_tasks, self.seed = turns, n_doors, num_tasks, seed
        self._task: Task | None = None
        self._room = 0
        self._done = True

    @classmethod
    def from_config(cls, env_cfg: Any) -> "ChoiceCorridorEnv":
        try:
            return cls(**env_cfg.kwargs)
        except TypeError as e:
            raise DreamGymError(f"key 'env.kwargs': {e}; choice-corridor takes turns, n_doors, num_tasks, seed") from None

    def spawn(self) -> "ChoiceCorridorEnv":
        return ChoiceCorridorEnv(self.turns, self.n_doors, self.num_tasks, self.seed)

    # -- Env protocol ---------------------------------------------------------------------------
    def tasks(self, split: str) -> list[Task]:
        return [self._make_task(i, split) for i in range(self.num_tasks)]

    def reset(self, task: Task) -> StepResult:
        self._task, self._room, self._done = task, 0, False
        return StepResult(self._observation())

    def step(self, action: str) -> StepResult:
        if self._task is None or self._done:
            raise DreamGymError("choice-corridor: step() before reset() or after the episode ended")
        if action not in self.available_actions():
            return StepResult(self._observation(), 0.0, False, {"invalid_action": True})
        door = action[len("click["):-1]
        if door != self._task.goal["doors"][self._room]:
            self._done = True
            return StepResult(f"Room {self._room + 1} of {self.turns}: the {door} door was a dead end. Game over.",
                              0.0, True, {"success": False})
        self._room += 1
        if self._room == self.turns:
            self._done = True
            return StepResult(f"You passed all {self.turns} rooms. You win!", 1.0, True, {"success": True})
        return StepResult(self._observation())

    def available_actions(self) -> list[str]:
        if self._task is None or self._done:
            return []
        return [f"click[{d}]" for d in self._task.goal["shown"][self._room]]

    def oracle(self) -> "CorridorOracle":
        return CorridorOracle()

    # -- internals --------------------------------------------------------------------------------
    def _observation(self) -> str:
        doors = ", ".join(self._task.goal["shown"][self._room])  # type: ignore[union-attr]
        return f"Room {self._room + 1} of {self.turns}. Doors: {doors}."

    def _make_task(self, index: int, split: str) -> Task:
        rng = random.Random(f"{self.seed}:{index}")  # same corridor in every split
        colours = list(COLOURS[: self.n_doors])
        doors: list[str] = []
        for _ in range(self.turns):  # consecutive rooms differ: "always the same colour" never solves a task
            doors.append(rng.choice([c for c in colours if not doors or c != doors[-1]]))
        shown = [rng.sample(colours, len(colours)) for _ in range(self.turns)]
        return Task(id=f"{self.name}:{split}-{index}", instruction="Walk through every room of the corridor.",
                    env=self.name, split=split, goal={"doors": doors, "shown": shown})


class CorridorOracle:
    """Scripted policy: the task's door for the room named in the observation."""

    name = "oracle"

    def __init__(self) -> None:
        self.doors: list[str] = []

    def reset(self, task: Task) -> None:
        self.doors = list(task.goal["doors"])

    def act(self, observation: str, available_actions: list[str]) -> str:
        m = _ROOM.search(observation)
        return f"click[{self.doors[int(m.group(1)) - 1]}]" if m else (available_actions or ["noop"])[0]
