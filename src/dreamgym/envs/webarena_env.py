"""`webarena`: WebArena's 812 tasks on the user's own WebArena servers, through the BrowserGym adapter
that `miniwob` uses (`BrowserGymEnv` in `envs/miniwob_env.py`): headless system Chromium, the page as
accessibility-tree text, BrowserGym's text actions. Settings: `env.webarena.*` (preset
`configs/env/webarena.yaml`); install: `pip install 'dreamgym[webarena]'`, then `pip install --no-deps
browsergym-webarena==0.14.3 libwebarena==0.0.4 text-generation==0.7.0` (libwebarena holds the task file and
WebArena's evaluators; their declared deps clash with dreamgym's huggingface-hub, see pyproject.toml), and
`apt-get install chromium`. Not run against real WebArena servers in this repository: none were at hand.

* Servers: BrowserGym reads the site URLs from WA_SHOPPING, WA_SHOPPING_ADMIN, WA_REDDIT, WA_GITLAB,
  WA_WIKIPEDIA, WA_MAP and WA_HOMEPAGE, and needs all seven. The env exports `env.webarena.<site>` into
  them (a site the config leaves None keeps a variable already set); with any site missing it raises a
  DreamGymError naming the keys and variables as it is built, before anything is imported or contacted.
  WebArena's own package reads the URLs once per process, so one process drives one set of servers.
* Tasks: the ids in `env.webarena.{train,dev,test}_tasks` (default ranges 0-649 / 650-699 / 700-811),
  as `webarena:<id>`. The intent is only known after `reset`: observations are MiniWoB's, `Goal: <intent>`,
  then the tree, whose root line carries the page's url (and `Last action error: ...` after a failed action).
* Actions: any BrowserGym action (`click('12')`, `fill('7', 'text')`, `select_option('9', 'Blue')`,
  `goto('http://...')`, ...). `available_actions()` lists MiniWoB's `click`/`fill` per element plus
  `send_msg_to_user('...')` (the answer: it ends the episode and WebArena's evaluator scores it),
  `go_back()` and `scroll(0, 500)`.
* Reward: WebArena's evaluator score at the end (1.0 = solved), 0 before; `max_steps` (30) bounds
  episodes. Some tasks' evaluators (fuzzy string match) call OpenAI and need OPENAI_API_KEY.
* The first reset imports `browsergym.webarena`, which downloads NLTK's `punkt_tab` data if it is
  missing; every task is its own gym id, so each reset starts a browser that logs in to the task's sites.
* No oracle: WebArena's references are evaluator settings, not action sequences, so `oracle()` is None
  and `--policy oracle` fails with a clear error (as for `http`).
"""

from __future__ import annotations

import os
from typing import Any

from dreamgym.config.envs import WEBARENA_SITES, WebArenaConfig
from dreamgym.envs.miniwob_env import BrowserGymEnv, _use_system_chromium
from dreamgym.errors import DreamGymError
from dreamgym.types import Task

__all__ = ["WebArenaEnv", "WEBARENA_ACTIONS", "site_variable", "resolve_urls", "export_urls"]

WEBARENA_ACTIONS = ("send_msg_to_user('...')", "go_back()", "scroll(0, 500)")


def site_variable(site: str) -> str:
    """The environment variable BrowserGym reads a site's URL from: `shopping_admin` -> `WA_SHOPPING_ADMIN`."""
    return f"WA_{site.upper()}"


def resolve_urls(config: WebArenaConfig) -> dict[str, str]:
    """Site -> URL: the config's, else the WA_* variable already set. With any site missing, a DreamGymError
    naming each missing key and variable (nothing is imported or contacted)."""
    urls = {site: url or os.environ.get(site_variable(site), "") for site, url in config.urls().items()}
    missing = [site for site in WEBARENA_SITES if not urls[site]]
    if missing:
        raise DreamGymError(
            "env 'webarena' needs the URL of each of your WebArena servers; missing: "
            + ", ".join(f"env.webarena.{site} (or ${site_variable(site)})" for site in missing)
            + ". Set them in the config or on the command line, e.g. env.webarena.shopping=http://HOST:7770 "
              "(see configs/env/webarena.yaml), or export the WA_* variables")
    return urls


def export_urls(urls: dict[str, str]) -> None:
    """Set WA_SHOPPING, ... from `urls`, where BrowserGym's webarena package reads them."""
    for site, url in urls.items():
        os.environ[site_variable(site)] = url


class WebArenaEnv(BrowserGymEnv):
    """One episode at a time, one browser per instance; `spawn()` makes siblings for `EnvPool` (they share
    the servers, whose state WebArena tasks change)."""

    name = "webarena"
    config_key = "env.webarena"
    extra_actions = WEBARENA_ACTIONS

    def __init__(self, config: WebArenaConfig | None = None, **settings: Any):
        """`config`, or the `WebArenaConfig` fields as keyword arguments (validated the same way)."""
        self.config = config if config is not None else WebArenaConfig(**settings)
        super().__init__(self.config.max_steps, self.config.chromium, self.config.headless)
        self.urls = resolve_urls(self.config)
        export_urls(self.urls)

    @classmethod
    def from_config(cls, env_cfg: Any) -> "WebArenaEnv":
        return cls(env_cfg.webarena)

    def spawn(self) -> "WebArenaEnv":
        return WebArenaEnv(self.config)

    def tasks(self, split: str) -> list[Task]:
        return [Task(id=f"webarena:{n}", env=self.name, split=split,
                     instruction=f"Solve WebArena task {n}; its goal is the first line of the observation.",
                     goal={"task_id": n}) for n in self.config.task_ids(split)]

    def gym_id(self, task: Task) -> str:
        return f"browsergym/webarena.{int(task.goal['task_id'])}"

    def reset_seed(self, task: Task) -> int:
        return int(task.goal["task_id"])  # a task id has one config: the seed picks nothing

    def oracle(self) -> None:
        """None: WebArena's references are evaluator settings, not action sequences."""
        return None

    # -- internals --------------------------------------------------------------------------------
    def _prepare(self) -> None:
        export_urls(self.urls)  # BrowserGym copies WA_* into the variables WebArena reads, per task
        if self._gym is None:
            self._gym = _require_webarena()
            _use_system_chromium(self.chromium, self.config_key)


def _require_webarena() -> Any:
    """Import BrowserGym's webarena package (registers `browsergym/webarena.<id>`); gymnasium."""
    try:
        import gymnasium
        import playwright  # noqa: F401
        import browsergym.webarena  # noqa: F401  (downloads NLTK's punkt_tab on first import)
    except ImportError as e:
        raise DreamGymError(f"env 'webarena' needs browsergym-webarena and libwebarena ({e}); install them with "
                            "pip install 'dreamgym[webarena]', and Chromium with apt-get install chromium") from None
    except (LookupError, OSError, ValueError) as e:  # nltk.download(raise_on_error=True) failing offline
        raise DreamGymError(f"env 'webarena': importing browsergym.webarena failed ({type(e).__name__}: {e}); it "
                            "fetches NLTK's punkt_tab data on first import: run python -m nltk.downloader punkt_tab "
                            "where the network is reachable") from None
    return gymnasium
