"""`textworld`: Microsoft TextWorld text adventures as a dreamgym Env, over games generated locally
(`envs/textworld_games.py`: difficulty levels, fixed seeds, an on-disk cache). Settings: `env.textworld.*`.

* Tasks: for each level in `levels`, `<split>_games` games whose seeds are fixed by (seed, split,
  index), so every split is a deterministic list, and the splits never share a game (games whose
  walkthrough does not win them are skipped, see `split_games`). Task ids look
  like `textworld:test-l2-7`; `goal` holds the game spec (`level`, `rooms`, `objects`, `quest_length`,
  `seed`), the `walkthrough` and `max_score`, enough to regenerate the game on another machine. The
  instruction is the game's objective text. `tasks(split)` generates the games it lists that are not
  cached yet (about 1.5 s each, once per machine).
* Observations: the game's own text, cleaned (`clean_observation`): no ASCII-art banner, no `>`
  prompt or status bar, no "RESTART, RESTORE ..." line, at most one blank line in a row.
* Actions: free text, as in the original. `available_actions()` lists TextWorld's admissible commands
  (sorted, as textworld gives them). An action outside that list still goes to the game, which answers
  as it does ("That's not a verb I recognise."), and the step carries `info["invalid_action"] = True`.
* Reward: outcome only, like WebShop. 0 on every step but the last; at the end, 1.0 if the game is won,
  else the game score normalised by its maximum (score / max_score, below 1 since the game is not won).
  Success == won == reward 1.0 (`info["success"]`). `info` also carries `score` and `max_score` (raw
  game points) and `won`/`lost`.
* Episodes end when the game is won or lost, or after `max_steps` actions (`info["truncated"] = True`);
  the rollout loop's `max_turns` may cut them earlier.
* Oracle: `WalkthroughOracle` replays the task's walkthrough (games are deterministic, so it always
  wins); `random` picks among the admissible commands.
"""

from __future__ import annotations

import re
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from dreamgym.envs.base import Env
from dreamgym.envs.textworld_games import (GameRecord, GameSpec, default_cache_dir, ensure_game, level_spec,
                                           require_textworld, split_games, start_game)
from dreamgym.errors import DreamGymError
from dreamgym.types import StepResult, Task

__all__ = ["TextWorldEnv", "WalkthroughOracle", "clean_observation"]

_BANNER_CHARS = frozenset(" $\\|_/<>")
_DROP_LINE = re.compile(r"^(>.*|Would you like to RESTART, RESTORE a saved game, QUIT or UNDO the last command\?)$")


def clean_observation(text: str) -> str:
    """Game text as the agent sees it: leading ASCII-art banner lines (only `$\\|_/<>` and spaces)
    dropped, lines starting with the `>` prompt (which carries the status bar) and the end-of-game
    RESTART question dropped, lines stripped, runs of blank lines collapsed to one."""
    lines = [line.strip() for line in text.replace("\r", "").split("\n")]
    start = 0
    while start < len(lines) and set(lines[start]) <= _BANNER_CHARS:
        start += 1
    out: list[str] = []
    for line in lines[start:]:
        if _DROP_LINE.match(line) or (not line and (not out or not out[-1])):
            continue
        out.append(line)
    return "\n".join(out).strip()


class TextWorldEnv(Env):
    """One episode at a time over cached TextWorld games; `spawn()` makes siblings for `EnvPool`."""

    name = "textworld"

    def __init__(self, levels: list[int] | tuple[int, ...] = (1, 2, 3), train_games: int = 20, dev_games: int = 5,
                 test_games: int = 10, seed: int = 0, max_steps: int = 50, cache_dir: str | Path | None = None):
        for key, value in (("train_games", train_games), ("dev_games", dev_games), ("test_games", test_games)):
            if value < 0:
                raise DreamGymError(f"key 'env.textworld.{key}': got {value}, expected a non-negative int")
        if max_steps < 1:
            raise DreamGymError(f"key 'env.textworld.max_steps': got {max_steps}, expected a positive int")
        require_textworld()  # fail at build time, with the install command, where textworld is missing
        self.levels = [int(level) for level in levels]
        for level in self.levels:
            level_spec(level, 0)  # unknown levels fail here, naming the key
        self.games = {"train": train_games, "dev": dev_games, "test": test_games}
        self.seed, self.max_steps = seed, max_steps
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self._tasks: dict[str, list[Task]] = {}
        self._game: Any = None  # the live textworld env
        self._game_path: Path | None = None
        self._state: Any = None
        self._steps = 0
        self._done = True

    @classmethod
    def from_config(cls, env_cfg: Any) -> "TextWorldEnv":
        c = env_cfg.textworld
        return cls(**{f.name: getattr(c, f.name) for f in fields(c)})

    def spawn(self) -> "TextWorldEnv":
        """A sibling on the same settings and cache, sharing the task lists already built."""
        sibling = TextWorldEnv(self.levels, self.games["train"], self.games["dev"], self.games["test"], self.seed,
                               self.max_steps, self.cache_dir)
        sibling._tasks = self._tasks
        return sibling

    # -- Env protocol ---------------------------------------------------------------------------
    def tasks(self, split: str) -> list[Task]:
        if split not in self.games:
            raise DreamGymError(f"split {split!r}: expected one of {', '.join(self.games)}")
        if split not in self._tasks:
            self._tasks[split] = [self._make_task(split, level, i, record) for level in self.levels
                                  for i, record in enumerate(split_games(level, self.seed, split, self.games[split],
                                                                         self.cache_dir))]
        return list(self._tasks[split])

    def reset(self, task: Task) -> StepResult:
        record = ensure_game(_spec_of(task), self.cache_dir)
        if self._game is None or self._game_path != record.path:
            self.close()
            self._game = start_game(record.path, admissible_commands=True, score=True, max_score=True, won=True,
                                    lost=True)
            self._game_path = record.path
        self._state = self._game.reset()
        self._steps, self._done = 0, False
        return StepResult(clean_observation(self._state.feedback), 0.0, False, {"task_id": task.id})

    def step(self, action: str) -> StepResult:
        if self._state is None or self._done:
            raise DreamGymError("textworld: step() before reset() or after the episode ended")
        invalid = action not in self._state["admissible_commands"]
        self._state, _, _ = self._game.step(action)
        self._steps += 1
        s = self._state
        won, lost = bool(s["won"]), bool(s["lost"])
        truncated = not (won or lost) and self._steps >= self.max_steps
        self._done = won or lost or truncated
        info: dict[str, Any] = {"score": int(s["score"]), "max_score": int(s["max_score"])}
        if invalid:
            info["invalid_action"] = True
        reward = 0.0
        if self._done:
            reward = 1.0 if won else min(info["score"] / max(info["max_score"], 1), 0.99)
            info.update(won=won, lost=lost, success=won)
            if truncated:
                info["truncated"] = True
        return StepResult(clean_observation(s.feedback), reward, self._done, info)

    def available_actions(self) -> list[str]:
        if self._state is None or self._done:
            return []
        return list(self._state["admissible_commands"])

    def close(self) -> None:
        if self._game is not None:
            self._game.close()
        self._game, self._game_path, self._state, self._done = None, None, None, True

    def oracle(self) -> "WalkthroughOracle":
        return WalkthroughOracle()

    # -- internals --------------------------------------------------------------------------------
    def _make_task(self, split: str, level: int, index: int, record: GameRecord) -> Task:
        goal = {"level": level, **asdict(record.spec), "walkthrough": record.walkthrough,
                "max_score": record.max_score}
        return Task(id=f"{self.name}:{split}-l{level}-{index}", instruction=record.objective, env=self.name,
                    split=split, goal=goal)


class WalkthroughOracle:
    """Scripted policy: the task's walkthrough, one command per turn (then the first available action)."""

    name = "oracle"

    def __init__(self) -> None:
        self.plan: list[str] = []
        self.turn = 0

    def reset(self, task: Task) -> None:
        self.plan, self.turn = list(task.goal.get("walkthrough") or []), 0

    def act(self, observation: str, available_actions: list[str]) -> str:
        self.turn += 1
        if self.turn <= len(self.plan):
            return self.plan[self.turn - 1]
        return (available_actions or ["look"])[0]


def _spec_of(task: Task) -> GameSpec:
    """The game spec a task's goal carries (the fields of GameSpec)."""
    try:
        return GameSpec(**{f.name: int(task.goal[f.name]) for f in fields(GameSpec)})
    except (KeyError, TypeError, ValueError) as e:
        raise DreamGymError(f"task {task.id!r}: goal lacks the textworld game spec "
                            f"(rooms, objects, quest_length, seed): {e}") from None
