"""`miniwob`: MiniWoB++ web tasks in a headless Chromium through BrowserGym (the WebArena road), with
the page turned into abstract text. Settings: `env.miniwob.*`; install: `pip install 'dreamgym[miniwob]'`
(browsergym-miniwob + the `miniwob` package, whose bundled HTML pages are served from disk) and
Debian's `chromium` (`apt-get install chromium`). Nothing is downloaded at run time: Playwright is
pointed at the system Chromium (see `_use_system_chromium`) instead of its own browser build.

* Tasks: for each MiniWoB task name in `tasks`, `<split>_episodes` episodes with fixed seeds
  (`seed * 1_000_000 + {train: 0, dev: 100_000, test: 200_000}[split] + i`), ids like
  `miniwob:test-click-button-3`. The page draws its goal from the seed, so the instruction is only
  known after `reset`: the task's `instruction` names the task, and the first observation starts with
  `Goal: <utterance>`.
* Observations: `Goal: ...`, then BrowserGym's accessibility tree as text (`[bid] role 'name'` lines,
  no InlineTextBox noise); after a failed action, a line `Last action error: ...`.
* Actions: BrowserGym's text actions, e.g. `click('13')`, `fill('19', 'Kasie')`. `available_actions()`
  lists `click('<bid>')` for each button/link/checkbox/radio/... and `fill('<bid>', '...')` templates
  for text fields (the agent writes the text). A failed action (unknown bid, bad syntax) leaves the page
  unchanged, reward 0, not done, `info["invalid_action"] = True`.
* Reward: BrowserGym's: 1.0 when MiniWoB's raw reward is positive (task solved), else 0; episodes end
  when MiniWoB says so or after `max_steps` actions.
* Oracle: `MiniWoBOracle`, rules for click-button, click-test, enter-text, focus-text.
* Not every MiniWoB task fits this text form: in click-link the "links" are `<span>`s whose clicks a
  page-level handler catches, so the accessibility tree shows them as plain StaticText without a bid
  and no text action can click them.

The BrowserGym plumbing lives here too and is shared with `webarena` (`envs/webarena_env.py`):
`BrowserGymEnv` (gym creation, reset/step, the goal + tree observation, the action list),
`parse_axtree_actions` and `_use_system_chromium`. A subclass names a task's gym id, reset seed and
extra `gym.make` arguments; `MiniWoBEnv` is one, with the behaviour described above.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from abc import abstractmethod
from pathlib import Path
from typing import Any

from dreamgym.envs.base import Env
from dreamgym.errors import DreamGymError
from dreamgym.types import StepResult, Task

__all__ = ["BrowserGymEnv", "MiniWoBEnv", "MiniWoBOracle", "parse_axtree_actions", "SPLIT_OFFSETS"]

SPLIT_OFFSETS = {"train": 0, "dev": 100_000, "test": 200_000}
_CLICKABLE = {"button", "link", "checkbox", "radio", "menuitem", "tab", "option", "switch", "treeitem", "cell"}
_FILLABLE = {"textbox", "searchbox", "combobox", "spinbutton"}
_NODE = re.compile(r"^\s*\[(?P<bid>[^\]]+)\] (?P<role>\w+) '(?P<name>.*?)'")


def parse_axtree_actions(axtree_text: str) -> list[str]:
    """Actions offered by a flattened accessibility tree: `click('bid')` for clickable roles,
    `fill('bid', '...')` for text fields, in page order."""
    actions = []
    for line in axtree_text.splitlines():
        m = _NODE.match(line)
        if m and m["role"] in _CLICKABLE:
            actions.append(f"click('{m['bid']}')")
        elif m and m["role"] in _FILLABLE:
            actions.append(f"fill('{m['bid']}', '...')")
    return actions


class BrowserGymEnv(Env):
    """One BrowserGym task at a time in one browser: the gym env is kept while the gym id stays the same.
    Subclasses set `name`, `config_key` (the `env.<name>` prefix errors name) and implement `gym_id`,
    `reset_seed` and `make_kwargs`; `_prepare()` runs before each gym env is made, and `extra_actions`
    are offered after the page's own."""

    name = "browsergym"
    config_key = "env.browsergym"
    extra_actions: tuple[str, ...] = ()

    def __init__(self, max_steps: int, chromium: str | None, headless: bool):
        self.max_steps, self.chromium, self.headless = max_steps, chromium, headless
        if max_steps < 1:
            raise DreamGymError(f"key '{self.config_key}.max_steps': got {max_steps}, expected a positive int")
        self._gym: Any = None  # the gymnasium module, once the BrowserGym task package is imported
        self._env: Any = None
        self._env_id: str | None = None
        self._obs: dict | None = None
        self._goal = ""
        self._steps = 0
        self._done = True

    # -- what a subclass says about its tasks ---------------------------------------------------
    @abstractmethod
    def gym_id(self, task: Task) -> str:
        """The registered gym id of the task's page, e.g. `browsergym/miniwob.click-button`."""

    @abstractmethod
    def reset_seed(self, task: Task) -> int:
        """The seed `reset` hands to the gym env."""

    def make_kwargs(self, task: Task) -> dict[str, Any]:
        """Extra keyword arguments of `gym.make` (besides `headless`)."""
        return {}

    def _prepare(self) -> None:
        """Runs before a gym env is made (import the task package, find Chromium, ...)."""

    # -- Env protocol ---------------------------------------------------------------------------
    def reset(self, task: Task) -> StepResult:
        gym_id = self.gym_id(task)
        if self._env is None or self._env_id != gym_id:
            self.close()
            self._prepare()
            self._env = self._gym.make(gym_id, headless=self.headless, **self.make_kwargs(task))
            self._env_id = gym_id
        self._obs, _ = self._env.reset(seed=self.reset_seed(task))
        self._goal, self._steps, self._done = str(self._obs.get("goal") or ""), 0, False
        return StepResult(self._observation(), 0.0, False, {"task_id": task.id, "goal": self._goal})

    def step(self, action: str) -> StepResult:
        if self._obs is None or self._done:
            raise DreamGymError(f"{self.name}: step() before reset() or after the episode ended")
        self._obs, reward, terminated, truncated, _ = self._env.step(action)
        self._steps += 1
        error = str(self._obs.get("last_action_error") or "")
        self._done = bool(terminated or truncated) or self._steps >= self.max_steps
        info: dict[str, Any] = {"invalid_action": True, "error": error[:300]} if error else {}
        if self._done:
            info["success"] = float(reward) >= 1.0
            if not (terminated or truncated):
                info["truncated"] = True
        return StepResult(self._observation(), float(reward), self._done, info)

    def available_actions(self) -> list[str]:
        if self._obs is None or self._done:
            return []
        return parse_axtree_actions(self._axtree()) + list(self.extra_actions)

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
        self._env, self._env_id, self._obs, self._done = None, None, None, True

    # -- internals --------------------------------------------------------------------------------
    def _axtree(self) -> str:
        from browsergym.utils.obs import IGNORED_AXTREE_ROLES, flatten_axtree_to_str

        return flatten_axtree_to_str(self._obs["axtree_object"], ignored_roles=set(IGNORED_AXTREE_ROLES) |
                                     {"InlineTextBox"})

    def _observation(self) -> str:
        text = f"Goal: {self._goal}\n\n{self._axtree()}"
        error = str(self._obs.get("last_action_error") or "").strip()  # type: ignore[union-attr]
        return text + (f"\n\nLast action error: {error.splitlines()[0][:200]}" if error else "")


class MiniWoBEnv(BrowserGymEnv):
    """One episode at a time, one browser per env instance; `spawn()` makes siblings for `EnvPool`."""

    name = "miniwob"
    config_key = "env.miniwob"

    def __init__(self, tasks: list[str] | tuple[str, ...] = ("click-button", "click-test", "enter-text", "focus-text"),
                 train_episodes: int = 50, dev_episodes: int = 10, test_episodes: int = 20, seed: int = 0,
                 max_steps: int = 10, chromium: str | None = None, base_url: str | None = None, headless: bool = True):
        self.task_names = list(tasks)
        self.episodes = {"train": train_episodes, "dev": dev_episodes, "test": test_episodes}
        self.seed = seed
        super().__init__(max_steps, chromium, headless)
        self._gym, miniwob = _require_browsergym()
        self.base_url = base_url or (Path(miniwob.__file__).parent / "html" / "miniwob").as_uri() + "/"
        known = {name.split("miniwob.", 1)[1] for name in self._gym.registry if name.startswith("browsergym/miniwob.")}
        unknown = [t for t in self.task_names if t not in known]
        if unknown:
            raise DreamGymError(f"key 'env.miniwob.tasks': unknown MiniWoB task(s) {', '.join(unknown)}; "
                                f"e.g. {', '.join(sorted(known)[:8])}, ...")
        _use_system_chromium(chromium)

    @classmethod
    def from_config(cls, env_cfg: Any) -> "MiniWoBEnv":
        c = env_cfg.miniwob
        return cls(list(c.tasks), c.train_episodes, c.dev_episodes, c.test_episodes, c.seed, c.max_steps, c.chromium,
                   c.base_url, c.headless)

    def spawn(self) -> "MiniWoBEnv":
        return MiniWoBEnv(self.task_names, self.episodes["train"], self.episodes["dev"], self.episodes["test"],
                          self.seed, self.max_steps, self.chromium, self.base_url, self.headless)

    def tasks(self, split: str) -> list[Task]:
        if split not in SPLIT_OFFSETS:
            raise DreamGymError(f"split {split!r}: expected one of {', '.join(SPLIT_OFFSETS)}")
        return [Task(id=f"miniwob:{split}-{name}-{i}", env=self.name, split=split,
                     instruction=f"Solve the MiniWoB++ task '{name}'; its goal is the first line of the page.",
                     goal={"task": name, "seed": self.seed * 1_000_000 + SPLIT_OFFSETS[split] + i})
                for name in self.task_names for i in range(self.episodes[split])]

    def gym_id(self, task: Task) -> str:
        return f"browsergym/miniwob.{task.goal['task']}"

    def reset_seed(self, task: Task) -> int:
        return int(task.goal["seed"])

    def make_kwargs(self, task: Task) -> dict[str, Any]:
        return {"task_kwargs": {"base_url": self.base_url}}

    def oracle(self) -> "MiniWoBOracle":
        return MiniWoBOracle()


class MiniWoBOracle:
    """Scripted policy for a few MiniWoB tasks, from the goal line and the tree in the observation:
    click the element named in quotes (click-button), the only button (click-test), focus
    the text field (focus-text), or fill the field with the quoted text, then press Submit (enter-text)."""

    name = "oracle"

    def reset(self, task: Task) -> None:
        self.task, self.filled = task.goal["task"], False

    def act(self, observation: str, available_actions: list[str]) -> str:
        goal = observation.split("\n", 1)[0]
        quoted = re.findall(r'"([^"]*)"', goal)
        nodes = [m.groupdict() for m in map(_NODE.match, observation.splitlines()) if m]
        if self.task == "enter-text" and not self.filled:
            field = next((n for n in nodes if n["role"] in _FILLABLE), None)
            if field and quoted:
                self.filled = True
                return f"fill('{field['bid']}', {json.dumps(quoted[0])})"
        if self.task == "focus-text":
            field = next((n for n in nodes if n["role"] in _FILLABLE), None)
            return f"click('{field['bid']}')" if field else "noop()"
        target = quoted[0] if quoted and self.task != "enter-text" else "Submit"
        for n in nodes:
            if n["role"] in _CLICKABLE and n["name"].strip().lower() == target.strip().lower():
                return f"click('{n['bid']}')"
        buttons = [n for n in nodes if n["role"] == "button"]
        return f"click('{buttons[0]['bid']}')" if buttons else (available_actions or ["noop()"])[0]


def _require_browsergym():
    try:
        import browsergym.miniwob  # noqa: F401  (registers the browsergym/miniwob.* gym ids)
        import gymnasium
        import miniwob
    except ImportError as e:
        raise DreamGymError(f"env 'miniwob' needs browsergym-miniwob and miniwob ({e}); install them with "
                            "pip install 'dreamgym[miniwob]', and Chromium with apt-get install chromium") from None
    return gymnasium, miniwob


def _use_system_chromium(chromium: str | None, config_key: str = "env.miniwob") -> None:
    """Let Playwright launch the system Chromium: unless Playwright's own build is installed, point
    PLAYWRIGHT_BROWSERS_PATH at a cache folder whose `chromium-<rev>/chrome-linux/chrome` links to it.
    Errors name `<config_key>.chromium`."""
    import playwright

    driver = Path(playwright.__file__).parent / "driver" / "package" / "browsers.json"
    revision = next(b["revision"] for b in json.loads(driver.read_text())["browsers"] if b["name"] == "chromium")
    default = Path(os.environ.get("PLAYWRIGHT_BROWSERS_PATH") or Path.home() / ".cache" / "ms-playwright")
    if chromium is None and (default / f"chromium-{revision}" / "chrome-linux" / "chrome").exists():
        return  # `playwright install chromium` was run: use Playwright's own build
    exe = chromium or shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe or not Path(exe).exists():
        raise DreamGymError(f"key '{config_key}.chromium': no Chromium found ({chromium or 'chromium not on PATH'}); "
                            f"install Debian's with apt-get install chromium, or set {config_key}.chromium=PATH")
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dreamgym" / "playwright"
    link = root / f"chromium-{revision}" / "chrome-linux" / "chrome"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists() or link.resolve() != Path(exe).resolve():
        tmp = link.with_name(f".chrome-{os.getpid()}")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(Path(exe).resolve())
        os.replace(tmp, link)
    os.environ["PLAYWRIGHT_BROWSERS_PATH"] = str(root)
