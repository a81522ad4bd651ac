"""`alfworld`: ALFWorld's text games (Shridhar et al. 2021) played in-process by ALFWorld's own
engine: TextWorld's PDDL environment over Fast Downward, with ALFWorld's domain, grammar and object
names (`alfworld` 0.4.2, `textworld[pddl]`). No server. Settings: `env.alfworld_native.*`.

* Games: every folder under `data_dir` holding a `game.tw-pddl` (ALFWorld's game format, as
  `alfworld-generate` writes it: PDDL domain + problem, the grammar with the task text, `solvable`,
  `walkthrough`). Default: the 24 small games shipped in `envs/alfworld_games` (four of each task
  type). Point `data_dir` at the official data (`$ALFWORLD_DATA/json_2.1.1`) to play ALFWorld's own.
  Like ALFWorld's `AlfredTWEnv`, folders with "movable" or "Sliced" in their path and games not marked
  solvable are skipped, and so are games without a walkthrough (run `alfworld-generate`).
* Splits: a folder with ALFWorld's `train`, `valid_seen`, `valid_unseen` sub-folders maps them to
  train, dev and test. Any other folder is split per task type by a shuffle seeded with `seed`
  (`dev_fraction`, `test_fraction`, the rest train), so every split is fixed and no game is in two.
  Each split's tasks come in a fixed order shuffled with `seed` (task types mixed); `max_games` keeps
  the first ones. Task ids are `alfworld:<game folder relative to data_dir>`; the instruction is
  the task text ("put a clean apple in fridge."); `goal` holds the folder (`game`), `task_type` and the
  game's `walkthrough`.
* Observations: ALFWorld's text as its engine writes it (the first one is the "-= Welcome to TextWorld,
  ALFRED! =-" room overview plus "Your task is to: ..."). Object names go through ALFWorld's demangler
  (`cabinet 1`, `mug 2`, not shuffled), so walkthroughs of the official files replay as recorded.
* Actions: free text. `available_actions()` lists ALFWorld's admissible commands (sorted). Anything
  else answers "Nothing happens." with the state unchanged, reward 0 and `info["invalid_action"] = True`.
* Reward: 1.0 at the step that completes the task (the episode ends, `info["success"] = True`), else 0.
* Episodes end when the task is done or after `max_steps` actions (`info["truncated"] = True`, reward 0).
* Oracle: the game's expert walkthrough (ALFWorld's hand-coded expert, or its planner's plan), replayed;
  `random` picks among the admissible commands.
* Speed: TextWorld's PDDL engine re-parses its grammar's text templates and conditions (TatSu) for every
  admissible command on every step, and translates the PDDL (twice) on every load and reset. All are pure
  functions of their text; `_install_caches` memoizes them (copies of the parsed templates; the
  translation results are only read), which makes steps ~3x and repeated resets ~6x faster without
  changing one character of the text (a test compares with the bare engine).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
import random
import re
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterator

from dreamgym.config.envs import ALFWORLD_TASK_TYPES
from dreamgym.envs.base import Env
from dreamgym.envs.textworld_env import WalkthroughOracle
from dreamgym.errors import DreamGymError
from dreamgym.types import StepResult, Task

__all__ = ["AlfWorldEnv", "GameEntry", "find_games", "assign_splits", "require_alfworld", "OFFICIAL_SPLITS"]

OFFICIAL_SPLITS = {"train": "train", "dev": "valid_seen", "test": "valid_unseen"}
"""dreamgym split -> sub-folder of ALFWorld's official data (json_2.1.1)"""

_INSTALL = ("pip install 'dreamgym[alfworld]' (alfworld==0.4.2 and textworld[pddl]==1.7.0; the latter builds "
            "fast-downward-textworld from source with g++, cmake and make, a few minutes; see docs/environments.md)")
_TASK_TEXT = re.compile(r'Your task is to: ((?:[^"\\]|\\.)*)"')  # up to the end of the JSON string


@dataclass(frozen=True)
class GameEntry:
    """One playable game found on disk, read without starting it."""

    rel: str
    """the game's folder relative to the games root (POSIX separators)"""
    task_type: str
    instruction: str
    walkthrough: tuple[str, ...]


def require_alfworld() -> Any:
    """ALFWorld's demangler wrapper class, or an error saying how to install the engine."""
    try:
        import fast_downward
        from alfworld.agents.environment.alfred_tw_env import AlfredDemangler
        from textworld.envs import PddlEnv  # noqa: F401
    except ImportError as e:
        raise DreamGymError(f"env 'alfworld' needs ALFWorld's engine ({e}); install it with {_INSTALL}") from None
    from fast_downward.interface import DOWNWARD_LIB_PATH

    if not Path(DOWNWARD_LIB_PATH).is_file():
        raise DreamGymError(f"env 'alfworld': fast_downward is installed ({fast_downward.__file__}) but its "
                            f"compiled library {DOWNWARD_LIB_PATH} is missing; reinstall with {_INSTALL}")
    _install_caches()
    return AlfredDemangler


@functools.cache
def _install_caches() -> None:
    """Memoize the engine's pure text work (once per process): grammar template parses (a deep copy per
    use, as the engine writes into the parsed symbols), condition queries, and PDDL -> SAS translations."""
    import fast_downward
    from textworld.envs.pddl import textgen

    parse = textgen._parse_and_convert
    parsed = functools.lru_cache(maxsize=8192)(lambda text, rule_name: parse(text, rule_name=rule_name))

    def parse_template(text: str, rule_name: str = "symbols", trace: bool = False) -> Any:
        return parse(text, rule_name=rule_name, trace=True) if trace else copy.deepcopy(parsed(text, rule_name))

    class _Rule(textgen.Rule):  # textgen uses Rule only to parse conditions
        parse_conjunctive_query = staticmethod(functools.lru_cache(maxsize=8192)(textgen.Rule.parse_conjunctive_query))

    textgen._parse_and_convert, textgen.Rule = parse_template, _Rule
    fast_downward.pddl2sas = functools.lru_cache(maxsize=32)(fast_downward.pddl2sas)


@contextlib.contextmanager
def _argv_kept() -> Iterator[None]:
    """Fast Downward's PDDL translator overwrites `sys.argv` whenever a game is loaded or reset."""
    saved = list(sys.argv)
    try:
        yield
    finally:
        sys.argv = saved


def find_games(root: Path, task_types: tuple[str, ...] | list[str] = ALFWORLD_TASK_TYPES) -> list[GameEntry]:
    """The playable games under `root`, sorted by folder: solvable, with a walkthrough, of a kept task type,
    and (as in ALFWorld) none with movable receptacles or sliced objects."""
    out = []
    for path in sorted(Path(root).rglob("game.tw-pddl")):
        folder = path.parent
        rel = folder.relative_to(root).as_posix()
        if "movable" in rel or "Sliced" in rel:
            continue
        try:
            game = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise DreamGymError(f"alfworld: cannot read the game file {path}: {e}") from None
        if not game.get("solvable") or not game.get("walkthrough"):
            continue
        task_type = _task_type(folder)
        match = _TASK_TEXT.search(game.get("grammar", ""))
        if task_type in task_types and match:
            instruction = match.group(1)
            with contextlib.suppress(ValueError):
                instruction = json.loads(f'"{instruction}"')  # undo JSON escapes (quotes in human task texts)
            out.append(GameEntry(rel, task_type, instruction, tuple(game["walkthrough"])))
    return out


def assign_splits(games: list[GameEntry], seed: int, dev_fraction: float,
                  test_fraction: float) -> dict[str, list[GameEntry]]:
    """Split games per task type: sorted, shuffled with (seed, task type), then the first
    round(n * test_fraction) go to test, the next round(n * dev_fraction) to dev, the rest to train."""
    splits: dict[str, list[GameEntry]] = {"train": [], "dev": [], "test": []}
    for task_type in sorted({g.task_type for g in games}):
        group = sorted((g for g in games if g.task_type == task_type), key=lambda g: g.rel)
        random.Random(f"alfworld-native:{seed}:{task_type}").shuffle(group)
        n_test, n_dev = round(len(group) * test_fraction), round(len(group) * dev_fraction)
        splits["test"] += group[:n_test]
        splits["dev"] += group[n_test:n_test + n_dev]
        splits["train"] += group[n_test + n_dev:]
    return splits


class AlfWorldEnv(Env):
    """One episode at a time over ALFWorld game files; `spawn()` makes siblings for `EnvPool`."""

    name = "alfworld"

    def __init__(self, data_dir: str | Path | None = None, task_types: list[str] | tuple[str, ...] = ALFWORLD_TASK_TYPES,
                 seed: int = 0, dev_fraction: float = 0.25, test_fraction: float = 0.25, max_games: int = 0,
                 max_steps: int = 50):
        from dreamgym.config.envs import AlfWorldNativeConfig

        AlfWorldNativeConfig(task_types=list(task_types), seed=seed, dev_fraction=dev_fraction,  # checks the values
                             test_fraction=test_fraction, max_games=max_games, max_steps=max_steps)
        self._demangler = require_alfworld()  # fail at build time, with the install command, where it is missing
        if data_dir is None:
            from dreamgym.envs.alfworld_games import GAMES_DIR

            self.root = GAMES_DIR
        else:
            self.root = Path(os.path.expanduser(os.path.expandvars(str(data_dir))))
            if not self.root.is_dir():
                raise DreamGymError(f"key 'env.alfworld_native.data_dir': {str(data_dir)!r} (= {self.root}) is not a "
                                    "folder; give the folder of ALFWorld's game files, e.g. $ALFWORLD_DATA/json_2.1.1 "
                                    "after alfworld-download, or leave it unset for the shipped games")
        self.data_dir = None if data_dir is None else str(data_dir)
        self.task_types = tuple(task_types)
        self.seed, self.dev_fraction, self.test_fraction = seed, dev_fraction, test_fraction
        self.max_games, self.max_steps = max_games, max_steps
        self._tasks: dict[str, list[Task]] = {}
        self._game: Any = None  # the PDDL engine, made at the first reset; one per env (its own Fast Downward copy)
        self._game_rel: str | None = None
        self._state: Any = None
        self._steps = 0
        self._done = True

    @classmethod
    def from_config(cls, env_cfg: Any) -> "AlfWorldEnv":
        c = env_cfg.alfworld_native
        return cls(**{f.name: getattr(c, f.name) for f in fields(c)})

    def spawn(self) -> "AlfWorldEnv":
        """A sibling on the same settings and games, sharing the task lists already built."""
        sibling = AlfWorldEnv(self.data_dir, self.task_types, self.seed, self.dev_fraction, self.test_fraction,
                              self.max_games, self.max_steps)
        sibling._tasks = self._tasks
        return sibling

    @property
    def official_layout(self) -> bool:
        """Whether the games root has ALFWorld's train/valid_seen/valid_unseen folders."""
        return all((self.root / sub).is_dir() for sub in OFFICIAL_SPLITS.values())

    # -- Env protocol ---------------------------------------------------------------------------
    def tasks(self, split: str) -> list[Task]:
        if split not in OFFICIAL_SPLITS:
            raise DreamGymError(f"split {split!r}: expected one of {', '.join(OFFICIAL_SPLITS)}")
        if split not in self._tasks:
            if self.official_layout:
                games = find_games(self.root / OFFICIAL_SPLITS[split], self.task_types)
                prefix = OFFICIAL_SPLITS[split] + "/"
                games = [GameEntry(prefix + g.rel, g.task_type, g.instruction, g.walkthrough) for g in games]
                self._tasks[split] = self._ordered(split, games)
            else:
                found = find_games(self.root, self.task_types)
                if not found:
                    raise DreamGymError(f"key 'env.alfworld_native.data_dir': no playable game.tw-pddl under "
                                        f"{self.root} (solvable, with a walkthrough, task types "
                                        f"{', '.join(self.task_types)})")
                for name, group in assign_splits(found, self.seed, self.dev_fraction, self.test_fraction).items():
                    self._tasks.setdefault(name, self._ordered(name, group))
        return list(self._tasks[split])

    def reset(self, task: Task) -> StepResult:
        rel = task.goal.get("game")
        path = self.root / str(rel) / "game.tw-pddl"
        if not rel or not path.is_file():
            raise DreamGymError(f"task {task.id!r}: no ALFWorld game file {path} (goal['game'] = {rel!r}); "
                                f"is env.alfworld_native.data_dir the folder the task came from?")
        with _argv_kept():
            if self._game is None:
                import textworld
                from textworld.envs import PddlEnv

                self._game = self._demangler(PddlEnv(textworld.EnvInfos(admissible_commands=True, won=True)),
                                             shuffle=False)
            if self._game_rel != rel:
                self._game_rel = None
                self._game.load(str(path))
                self._game_rel = rel
            self._state = self._game.reset()
        self._steps, self._done = 0, False
        return StepResult(self._state.feedback.strip(), 0.0, False, {"task_id": task.id})

    def step(self, action: str) -> StepResult:
        if self._state is None or self._done:
            raise DreamGymError("alfworld: step() before reset() or after the episode ended")
        invalid = action.strip() not in self._state["admissible_commands"]
        self._state, _, _ = self._game.step(action)
        self._steps += 1
        won = bool(self._state["won"])
        truncated = not won and self._steps >= self.max_steps
        self._done = won or truncated
        info: dict[str, Any] = {}
        if invalid:
            info["invalid_action"] = True
        if self._done:
            info.update(won=won, success=won)
            if truncated:
                info["truncated"] = True
        return StepResult(self._state.feedback.strip(), 1.0 if won else 0.0, self._done, info)

    def available_actions(self) -> list[str]:
        if self._state is None or self._done:
            return []
        return list(self._state["admissible_commands"])

    def close(self) -> None:
        """End the episode. The engine stays with this env for its next reset: it holds a private copy of Fast
        Downward's library, which cannot be unloaded safely (loading another copy after a dlclose crashes)."""
        self._state, self._done = None, True

    def oracle(self) -> WalkthroughOracle:
        return WalkthroughOracle()

    # -- internals --------------------------------------------------------------------------------
    def _ordered(self, split: str, games: list[GameEntry]) -> list[Task]:
        """A split's tasks: sorted by folder, shuffled with (seed, split), cut to `max_games`."""
        games = sorted(games, key=lambda g: g.rel)
        random.Random(f"alfworld-native:{self.seed}:{split}:order").shuffle(games)
        if self.max_games:
            games = games[:self.max_games]
        return [Task(id=f"{self.name}:{g.rel}", instruction=g.instruction, env=self.name, split=split,
                     goal={"game": g.rel, "task_type": g.task_type, "walkthrough": list(g.walkthrough)})
                for g in games]


def _task_type(folder: Path) -> str:
    """The task type a game folder's `traj_data.json` names, else the one its folder name starts with
    (`pick_heat_then_place_in_recep-Egg-None-CounterTop-15/trial_T2019...`)."""
    traj = folder / "traj_data.json"
    if traj.is_file():
        with contextlib.suppress(OSError, ValueError, AttributeError):
            task_type = json.loads(traj.read_text()).get("task_type")
            if task_type:
                return str(task_type)
    for part in (folder.name, folder.parent.name):
        for task_type in ALFWORLD_TASK_TYPES:
            if part.startswith(task_type):
                return task_type
    return ""
